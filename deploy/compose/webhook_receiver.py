"""An example webhook receiver for deploy/docker-compose.yml: accepts busted's webhook
batches (a JSON array of events per POST) and prints one line per event, so
`podman-compose logs receiver` shows what a SIEM would get. Standard library only; an
example, not a server to expose."""

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Receiver(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        try:
            events = json.loads(body)
        except ValueError:
            self.send_response(400)
            self.end_headers()
            return
        for event in events if isinstance(events, list) else [events]:
            print(json.dumps({k: event.get(k) for k in (
                "event_id", "event_type", "process_name", "container_id", "llm_provider",
                "llm_model", "policy") if event.get(k) is not None}), flush=True)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8080
    ThreadingHTTPServer(("0.0.0.0", port), Receiver).serve_forever()
