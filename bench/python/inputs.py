"""Input sets for the Python benchmarks: the sample images copied `repeat` times, and a list file of them."""
import os
import shutil


def copy_images(images_dir, repeat, work):
    """Copies every .png/.jpg of images_dir `repeat` times into work/in (distinct files; the OS cache holds
    them all either way) and writes work/list.txt. Returns (paths, list_file)."""
    images = sorted(os.path.join(images_dir, f) for f in os.listdir(images_dir)
                    if f.lower().endswith((".png", ".jpg", ".jpeg")))
    os.makedirs(os.path.join(work, "in"), exist_ok=True)
    paths = []
    for r in range(repeat):
        for image in images:
            copy = os.path.join(work, "in", f"{r:03d}-{os.path.basename(image)}")
            shutil.copyfile(image, copy)
            paths.append(copy)
    list_file = os.path.join(work, "list.txt")
    with open(list_file, "w") as f:
        f.write("\n".join(paths) + "\n")
    return paths, list_file
