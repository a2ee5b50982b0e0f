"""The function runtime: a handler folder served as an ASGI app.

``create_app(handler_dir, function_name)`` builds the app; ``python -m gateway.runtime
--handler DIR --name NAME --host H --port P`` serves it with uvicorn (the process
contract of the local provider and of the OpenFaaS template).
"""

from gateway.runtime.app import create_app
from gateway.runtime.context import Context
from gateway.runtime.loader import HandlerLoadError

__all__ = ["Context", "HandlerLoadError", "create_app"]
