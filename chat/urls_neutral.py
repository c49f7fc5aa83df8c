from django.urls import path

from chat import views

# Visitor URLs that do not depend on the language. /exit/ is fixed: the page's quick-exit
# beacon posts to it whatever language the page is in.
urlpatterns = [
    path("exit/", views.exit_page, name="exit"),
]
