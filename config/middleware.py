"""Site-wide middleware."""

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.utils.cache import add_never_cache_headers


class NoStoreMiddleware:
    """Every response is `Cache-Control: no-store`: nothing this service shows may stay in a
    browser's or a proxy's cache (H-1). Static files are served before Django and keep theirs."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response):
        self.get_response = get_response
        if iscoroutinefunction(self.get_response):
            markcoroutinefunction(self)

    def __call__(self, request):
        if iscoroutinefunction(self):
            return self.__acall__(request)
        response = self.get_response(request)
        add_never_cache_headers(response)
        return response

    async def __acall__(self, request):
        response = await self.get_response(request)
        add_never_cache_headers(response)
        return response
