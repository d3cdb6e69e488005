"""Maps the repository's folders onto one import namespace.

engine/  -> videogpa.engine
kernels/ -> videogpa.kernels
recipes/ -> videogpa.recipes (the loop launches its stages as `python -m videogpa.recipes.<stage>`)
Both folders are namespace packages (no __init__.py): when the repository root is on sys.path (pytest,
`python -m`, a notebook started in the checkout), a bare `import kernels` or `import engine` passes over
them to an installed package of that name (Hugging Face's `kernels`, which transformers imports), because
a regular package anywhere on sys.path wins over a namespace portion. Nothing of ours is importable as a
bare top-level `engine` or `kernels`; the import names are `videogpa.engine` and `videogpa.kernels`.
"""

from setuptools import find_packages, setup

ROOTS = {"videogpa.engine": "engine", "videogpa.kernels": "kernels", "videogpa.recipes": "recipes"}


def _packages() -> tuple[list[str], dict[str, str]]:
    packages, package_dir = [], {}
    for name, folder in ROOTS.items():
        packages.append(name)
        package_dir[name] = folder
        for sub in find_packages(folder):
            packages.append(f"{name}.{sub}")
            package_dir[f"{name}.{sub}"] = f"{folder}/{sub.replace('.', '/')}"
    return packages, package_dir


packages, package_dir = _packages()
setup(packages=packages, package_dir=package_dir, include_package_data=False)
