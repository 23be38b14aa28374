"""The httptools front end (apps/fasthttp.py) serving a Tornado app on its own event loop thread, for tests, and a
handler that records every request it is handed (abuse tests check nothing reaches it twice or across requests)."""
import asyncio
import contextlib
import threading

import tornado.web

from foundry_inference.apps.fasthttp import HttpToolsServer


@contextlib.contextmanager
def serving(app, port=0, **server_kwargs):
    """Yields the (host, port) the server listens on; stops it (2 s grace) on exit."""
    state, ready = {}, threading.Event()

    def run():
        async def main():
            srv = HttpToolsServer(app, **server_kwargs)
            state["address"] = (await srv.listen(port, "127.0.0.1"))[0]
            state["loop"], state["stop"] = asyncio.get_running_loop(), asyncio.Event()
            ready.set()
            await state["stop"].wait()
            await srv.shutdown(2)
        asyncio.run(main())
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    ready.wait(10)
    try:
        yield state["address"]
    finally:
        state["loop"].call_soon_threadsafe(state["stop"].set)
        thread.join(10)


def recording_handler(hits):
    """A handler class appending (method, path, body) of each request to `hits` and echoing path and body."""
    class Record(tornado.web.RequestHandler):
        def _record(self):
            hits.append((self.request.method, self.request.path, self.request.body))
            self.finish({"path": self.request.path, "body": self.request.body.decode("latin1")})

        get = post = _record
    return Record
