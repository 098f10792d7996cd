from tests.lifecycle_support import database_url, events, http, server  # noqa: F401
