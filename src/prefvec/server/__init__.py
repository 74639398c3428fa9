"""The prefvec inference server: FastAPI app, HTTP-free services, scheduler, backends.

Entry points: :func:`prefvec.server.app.create_app` and :func:`prefvec.server.run.serve`.
"""
