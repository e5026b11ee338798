app_name = "optout"
urlpatterns: list = []
