# Sourced by the bench scripts: sets $python to an interpreter with torch, Pillow and NumPy, or exits 2.
python=""
for candidate in python3 /usr/bin/python3; do
  if "$candidate" -c "import torch, PIL, numpy" 2>/dev/null; then python=$candidate; break; fi
done
if [ -z "$python" ]; then
  echo "No python3 with torch, Pillow and NumPy: apt-get install python3-torch python3-pil python3-numpy" >&2
  exit 2
fi
