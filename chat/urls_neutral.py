# Visitor URLs that do not depend on the language.
urlpatterns = []
