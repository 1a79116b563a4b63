"""Scripts that tests of several folders run as a user's job."""

#: Wipes its checkpoint folder (runctl's mark of it too), leaves a symlink no snapshot holds
#: and fails: the agent's restart then meets a file runctl did not write, which is bad input.
WIPES_ITS_FOLDER_AND_FAILS = """\
import os, shutil, sys
import runctl
folder = runctl.checkpoint_dir()
shutil.rmtree(folder)  # a fresh start the script's own way: runctl's mark of the folder goes too
folder.mkdir()
runctl.save_atomic(folder / "ckpt-0.pt", b"0")
os.symlink("ckpt-0.pt", folder / "latest")  # no snapshot holds a symlink: a file runctl did not write
sys.exit(3)
"""
