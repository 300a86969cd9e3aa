from tests.faults.conftest import barrier  # noqa: F401  (shared fixtures)
from tests.integration.conftest import local_cluster, redis_server  # noqa: F401
