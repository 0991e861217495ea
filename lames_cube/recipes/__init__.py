"""Runners: everything that runs a recipe end to end.

The library's stages (search, cubes, labels, patches, models, products) are plain functions;
the modules here chain them for a named recipe and are the only place below the command line
that may use the synthetic world (:mod:`lames_cube.synthetic`):

- :mod:`lames_cube.recipes.cubes`: cube recipes (``cubes/<name>.yaml``), validated on load;
- :mod:`lames_cube.recipes.pipeline`: a cube recipe run tile by tile into a Zarr store;
- :mod:`lames_cube.recipes.patchsets`: patch recipes (``cubes/patches/<name>.yaml``) into patch sets;
- :mod:`lames_cube.recipes.experiments`: experiment recipes (training and evaluation variants);
- :mod:`lames_cube.recipes.country`: country-scale inference and its evaluation.

The cube-recipe names are re-exported here (``from lames_cube.recipes import load_recipe``);
importing this package never imports torch.
"""

from lames_cube.recipes.cubes import (
    CUBES_DIR,
    Recipe,
    RecipeError,
    RecipeNotFoundError,
    dump_recipe,
    list_recipes,
    load_recipe,
    recipe_path,
)

__all__ = ["CUBES_DIR", "Recipe", "RecipeError", "RecipeNotFoundError", "dump_recipe",
           "list_recipes", "load_recipe", "recipe_path"]
