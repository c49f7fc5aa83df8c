from django.urls import path

from console import views

# Mounted at /advisor/ (config/urls.py); the admin's login goes through these pages too.
urlpatterns = [
    path("", views.console, name="advisor-console"),
    path("login/", views.login, name="advisor-login"),
    path("verify/", views.verify, name="advisor-verify"),
    path("enrol/", views.enrol, name="advisor-enrol"),
    path("logout/", views.logout, name="advisor-logout"),
]
