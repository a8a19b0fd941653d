"""``phi3 serve``: an OpenAI-compatible HTTP server over :func:`phi3.load` and :class:`phi3.Model`.

Install it with ``pip install "phi3-core[serve]"`` (FastAPI, uvicorn, pydantic, prometheus-client).
Importing this package imports none of them: :mod:`phi3.server.command` (the click command) is
registered with the CLI for every user, and the web stack is imported only when ``phi3 serve``
starts. One job per module:

- :mod:`~phi3.server.command`: the ``phi3 serve`` command line.
- :mod:`~phi3.server.app`: the FastAPI application: routes, middleware, error handlers.
- :mod:`~phi3.server.guard`: the API key and the body limit, before anything reads a body.
- :mod:`~phi3.server.validation`: bodies checked against their schemas, errors as one-line 400s.
- :mod:`~phi3.server.schemas`: every request and response body (pydantic).
- :mod:`~phi3.server.mapping`: OpenAI requests as phi3 configs, messages and tools; results as fields.
- :mod:`~phi3.server.serving`: the pool, queue and running generations behind the routes.
- :mod:`~phi3.server.sse`: a streamed answer as server-sent events, and how it ends.
- :mod:`~phi3.server.uvicorn_runner`: uvicorn, cancelling generations as shutdown begins.
- :mod:`~phi3.server.errors`: OpenAI's error object and the HTTP status of each phi3 error.
- :mod:`~phi3.server.model_spec`: what a request's ``model`` field means.
- :mod:`~phi3.server.pool`: loading, sharing, LRU and idle unloading of models.
- :mod:`~phi3.server.slots`: per-model generation slots and the bounded FIFO queue.
- :mod:`~phi3.server.streaming`: running a blocking :class:`phi3.TextStream` off the event loop.
- :mod:`~phi3.server.metrics`: Prometheus metrics.
- :mod:`~phi3.server.responses`: the Responses API's bodies, and its mapping onto phi3 chat.
- :mod:`~phi3.server.responses_routes`: ``/v1/responses`` over HTTP, SSE and WebSocket, and ``/compact``.
- :mod:`~phi3.server.responses_store`: stored responses for ``previous_response_id`` (bounded LRU).
- :mod:`~phi3.server.ui_routes`: the chat page at ``/`` (static files in ``ui/``; ``--no-ui`` turns it off).

``phi3 serve --ray`` (``pip install "phi3-core[ray]"``) runs the same app on Ray Serve; only these
modules import Ray, and only the ``--ray`` path imports them:

- :mod:`~phi3.server.ray_options`: the Ray options, checked without Ray.
- :mod:`~phi3.server.ray_runner`: starting or joining Ray, deploying, stopping.
- :mod:`~phi3.server.ray_deployments`: the application: ingress, model and registry deployments.
- :mod:`~phi3.server.ray_ingress`: the app's server state in the ingress (generations on replicas).
- :mod:`~phi3.server.ray_replica`: a model replica.
- :mod:`~phi3.server.ray_registry`: every replica's last report.
- :mod:`~phi3.server.ray_events`: the data that crosses between them.
"""
