"""Region-search networks: the search-path matcher and the exhaustive CNN it is compared with."""
