from django.urls import path

from chat import views

# Neutral paths: they stay in the browser's history, which the site cannot erase.
urlpatterns = [
    path("", views.start, name="start"),
    path("chat/", views.chat, name="chat"),
    path("about/", views.safety, name="safety"),
]
