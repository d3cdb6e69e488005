"""Maps the repository's folders onto one import namespace.

engine/  -> videogpa.engine
kernels/ -> videogpa.kernels
Nothing is installed as a bare top-level `engine` or `kernels` (another distribution owns `kernels`).
"""

from setuptools import find_packages, setup

ROOTS = {"videogpa.engine": "engine", "videogpa.kernels": "kernels"}


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
