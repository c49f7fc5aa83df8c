from django.urls import path

from sms import views

urlpatterns = [
    path("inbound", views.inbound, name="sms-inbound"),
    path("status", views.status, name="sms-status"),
]
