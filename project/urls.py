"""The demo's URLs: step 3 of "Add it to your project" (README), plus the demo's own pages.

The stream itself is served by ``with_streams`` in project/asgi.py (step 4).
"""

from django.contrib import admin
from django.urls import include, path

from notifications.views import inbox

urlpatterns = [
    path("admin/", admin.site.urls),
    path("accounts/", include("django.contrib.auth.urls")),
    path("notifications/", include("notifications.urls")),  # step 3
    # The demo's home page is the app's inbox (also at /notifications/), in the demo's layout
    # (templates/notifications/base.html).
    path("", inbox, name="home"),
]
