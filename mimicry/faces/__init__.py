"""The faces of mimicry: thin layers over the Python API, with no logic of their own.

``cli`` (typer) today; the HTTP service and the HTML report join here. Each maps
:class:`mimicry.errors.MimicryError` through its attributes (exit code, HTTP
status, code) and prints ``to_dict()`` of the API's results.
"""
