from tests.integration.conftest import local_cluster, redis_server  # noqa: F401  (shared fixtures)
