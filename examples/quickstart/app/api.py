"""A FastAPI ingress: several routes in one Serve deployment."""

from fastapi import FastAPI
from ray import serve

VERSION = "v1"
api = FastAPI()


@serve.deployment
@serve.ingress(api)
class Api:
    @api.get("/")
    def index(self) -> dict:
        return {"service": "api", "version": VERSION}

    @api.get("/square/{n}")
    def square(self, n: int) -> dict:
        return {"n": n, "square": n * n}


app = Api.bind()
