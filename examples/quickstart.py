"""keel in one program: serve, read a live config, lock, run a job, call a service by name."""

import argparse
import asyncio

from pydantic import BaseModel

import keel
from keel.coord import Lock
from keel.http import Client
from keel.schedule import JobContext, Scheduler
from keel.service import Service


class Settings(BaseModel):  # the live config hello.json
    greeting: str = "hello"


async def main(url: str, port: int) -> None:
    """Run until SIGTERM or Ctrl-C, then stop cleanly."""
    async with keel.connect(url) as store, Client(store) as client:

        async def app(scope, receive, send):  # any ASGI app: FastAPI, Starlette...
            if scope["type"] == "http":
                body = f"{service.config.value.greeting}\n".encode()
                await send({"type": "http.response.start", "status": 200, "headers": []})
                await send({"type": "http.response.body", "body": body})

        service = Service(
            "hello", app, store=store, port=port, config="hello.json", config_model=Settings
        )
        scheduler = Scheduler(store, group="quickstart")

        @scheduler.job("quickstart.call", interval_s=2)
        async def call(ctx: JobContext) -> None:
            await service.ready.wait()
            async with Lock(service.session, "quickstart/call") as held:  # the service's session
                reply = await client.get("http://hello/")  # by name, found in the registry
                print("CALLED", reply.text.strip(), "token", held.fencing_token, flush=True)

        async def announce() -> None:
            await service.ready.wait()
            print("READY", service.url, flush=True)

        async with asyncio.TaskGroup() as tasks:  # SIGTERM or Ctrl-C stops them all
            tasks.create_task(service.serve())
            tasks.create_task(scheduler.run())
            tasks.create_task(announce())
    print("STOPPED", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="keel quickstart")
    parser.add_argument("--store", default="sqlite://", help="store URL")
    parser.add_argument("--port", type=int, default=8000, help="port to serve on (0: any)")
    args = parser.parse_args()
    asyncio.run(main(args.store, args.port))
