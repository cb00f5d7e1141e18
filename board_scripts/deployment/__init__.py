"""Deploy a bundle and the runtime to one board over ssh, build its engine there, check and verify it.

  python3 board_scripts/deploy.py BUNDLE --host HOST [--user USER] [--dir DIR] [--port N] [--identity KEY]
          [--python PYTHON] [--no-install | --skip-requirements] [--udev] [--trt-mode MODE]
          [--copy auto|rsync|tar] [--ssh-option OPTION ...]

Runs on the host (Python 3.8+ with numpy and packaging: the project's .venv; ssh; rsync if present). This is
the one deploy procedure; board_scripts/ansible/deploy.yml runs it for each board of an inventory. Steps
(docs/deploy.md):
  1. checks the bundle here (manifest, sha256 of every file, the target's board_requirements) and connects
     (one ssh call: directory, live release, rsync, what the board's Python imports);
  2. the target's board requirements, from the bundle's manifest: checks them, pip-installs what pip can;
  3. stages a new release DIR/releases/.staging-XXXXXX on the board: runtime/, the board side of
     board_scripts/, the bundle, and the live release's other bundles (rsync when both sides have it, else
     tar over ssh);
  4. --udev: installs board_scripts/udev/99-dynn-dvfs.rules (sudo on the board);
  5. nano-gpu: builds the TensorRT engine there (python -m runtime trt-build);
  6. runs python -m runtime doctor (reported) and python -m runtime verify (must pass) in the staging release;
  7. renames it to DIR/releases/<id> and switches the symlink DIR/current to it in one rename; keeps the
     previous release, removes older ones. Any failure (a step, the connection, Ctrl-C) before the switch
     leaves DIR/current on the previous release and removes the staging release.

Exit status: 0 deployed and verified; 2 bad arguments or a bad bundle on the host; 3 cannot connect (or the
connection dropped); 4 staging, copying or switching on the board failed; 5 the board lacks a requirement or
pip failed; 6 the TensorRT engine build failed; 7 installing the udev rule failed; 8 verify failed; 130
interrupted. Each failure ends with one line on stderr: `error: USER@HOST:PORT: what failed; what to do;
what is live`.
"""
