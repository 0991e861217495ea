"""Built-in cube recipes (``*.yaml``), shipped as package data: the package ``lames_cube.cubes``.

This folder holds settings only; this file exists so the editable install can import it
(see ``[tool.setuptools]`` in pyproject.toml).
"""
