"""The reward endpoint: `app` (the Ray Serve deployment) over `api` (wire format, no Ray).

`prefgen.serve:build_app` is the import path Ray Serve configs use; it is resolved lazily so
that importing `prefgen.serve.api` does not pull in Ray Serve.
"""


def __getattr__(name: str):
    if name in ("build_app", "ServeConfig"):
        from prefgen.serve import app

        return getattr(app, name)
    raise AttributeError(f"module 'prefgen.serve' has no attribute {name!r}")
