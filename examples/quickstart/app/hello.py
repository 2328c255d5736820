"""A plain Serve deployment: GET /hello answers with a greeting."""

from ray import serve
from starlette.requests import Request

VERSION = "v1"


@serve.deployment
class Hello:
    def __call__(self, request: Request) -> str:
        name = request.query_params.get("name", "world")
        return f"hello {name} ({VERSION})"


app = Hello.bind()
