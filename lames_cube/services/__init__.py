"""Services beside the library: the local STAC API (PostgreSQL + pgstac + stac-fastapi) and its
host setup. Only the command line and the tests use them; the library never does.

- :mod:`lames_cube.services.host`: PostgreSQL/PostGIS and the server venv
  (``lames-cube stac install`` / ``lames-cube stac check``);
- :mod:`lames_cube.services.stac_api`: :class:`StacApiServer`, a throw-away STAC API on loopback.
"""

from lames_cube.services.host import (
    check_server_env,
    ensure_server_env,
    install_command,
    prepare_server_host,
    server_host_status,
)
from lames_cube.services.stac_api import StacApiServer, serve_forever

__all__ = [
    "StacApiServer",
    "check_server_env",
    "ensure_server_env",
    "install_command",
    "prepare_server_host",
    "serve_forever",
    "server_host_status",
]
