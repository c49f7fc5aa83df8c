from django.urls import path

from chat import views

urlpatterns = [
    path("", views.start, name="start"),
    path("chat/", views.chat, name="chat"),
]
