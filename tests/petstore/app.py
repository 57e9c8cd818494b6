"""A small pet store app, unrelated to lights, that records every request it gets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route

from hostwire import Plugin, to_thread

SPEC = Path(__file__).with_name("petstore.yaml")
TOKEN = "store-owner-token"


def create_app() -> Starlette:
    pets: dict[str, dict[str, Any]] = {"1": {"id": "1", "name": "Rex", "tag": "dog"}}
    seen: list[dict[str, Any]] = []

    def record(request: Request) -> None:
        extension = request.scope.get("extensions", {}).get("hostwire")
        seen.append(
            {
                "method": request.method,
                "path": request.url.path,
                "raw_path": request.scope.get("raw_path", b"").decode("latin-1"),
                "query": str(request.query_params),
                "headers": dict(request.headers),
                "in_process_plugin": extension["plugin"] if extension else None,
            }
        )

    async def list_pets(request: Request) -> Response:
        record(request)
        tag = request.query_params.get("tag")
        found = [p for p in pets.values() if tag is None or p.get("tag") == tag]
        return JSONResponse(found[: int(request.query_params.get("limit", "100"))])

    async def create_pet(request: Request) -> Response:
        record(request)
        pet = {"id": str(len(pets) + 1), **json.loads(await request.body())}
        pets[pet["id"]] = pet
        return JSONResponse(pet, status_code=201)

    async def show_pet(request: Request) -> Response:
        record(request)
        # A worker thread on purpose: nested in-process calls need one too.
        pet = await to_thread(pets.get, request.path_params["pet_id"])
        if pet is None:
            return JSONResponse({"error": {"code": "not_found", "message": "no pet"}}, 404)
        return JSONResponse(pet)

    async def delete_pet(request: Request) -> Response:
        record(request)
        pets.pop(request.path_params["pet_id"], None)
        return Response(status_code=204)

    async def adopt_pet(request: Request) -> Response:
        record(request)
        plugin: Plugin = request.app.state.adopter
        data = json.dumps({"path": {"petId": request.path_params["pet_id"]}}).encode()
        output = await to_thread(plugin.call, request.app.state.adopter_export, data)
        return Response(output, media_type="application/json")

    async def slow(request: Request) -> Response:
        record(request)
        await anyio.sleep(float(request.query_params["seconds"]))
        return JSONResponse({"slept": True})

    async def admin(request: Request) -> Response:
        record(request)
        return JSONResponse({"secret": "must never be reached by a plug-in"})

    api = [
        Route("/pets", list_pets, methods=["GET"]),
        Route("/pets", create_pet, methods=["POST"]),
        Route("/pets/{pet_id}", show_pet, methods=["GET"]),
        Route("/pets/{pet_id}", delete_pet, methods=["DELETE"]),
        Route("/pets/{pet_id}/adopt", adopt_pet, methods=["POST"]),
        Route("/slow", slow, methods=["GET"]),
    ]
    app = Starlette(routes=[Mount("/api", routes=api), Route("/admin/{rest:path}", admin)])
    app.state.seen = seen
    app.state.pets = pets
    return app
