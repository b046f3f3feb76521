"""Client adapters: translate a library's request into the core's terms and back.

Only each adapter module imports its library; no policy logic lives here.
"""
