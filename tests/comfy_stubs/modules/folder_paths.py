"""Stand-in `folder_paths`: model folders under `models_dir` and the output folder, both under `base`
(the `comfy_host` fixture points them into a temporary folder with `set_base`)."""
from __future__ import annotations

import os

base = models_dir = output_directory = ""
folder_names_and_paths: dict[str, tuple[list[str], set[str]]] = {}


def set_base(path: str) -> None:
    global base, models_dir, output_directory
    base, models_dir, output_directory = path, os.path.join(path, "models"), os.path.join(path, "output")
    folder_names_and_paths.clear()


def get_folder_paths(folder_name: str) -> list[str]:
    return folder_names_and_paths[folder_name][0][:]


def get_output_directory() -> str:
    return output_directory


def get_filename_list(folder_name: str) -> list[str]:
    if folder_name not in folder_names_and_paths:
        return []
    folders, extensions = folder_names_and_paths[folder_name]
    names = set()
    for folder in folders:
        for root, _, files in os.walk(folder):
            names |= {os.path.relpath(os.path.join(root, f), folder) for f in files
                      if not extensions or os.path.splitext(f)[1] in extensions}
    return sorted(names)


def get_full_path(folder_name: str, filename: str) -> str | None:
    for folder in folder_names_and_paths.get(folder_name, ([], set()))[0]:
        path = os.path.join(folder, filename)
        if os.path.isfile(path):
            return path
    return None
