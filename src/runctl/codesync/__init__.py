"""Code sync: ship a project's code to an instance through the store, content-addressed.

``upload_tree(store, folder, include=...)`` on the CLI's side, ``materialize(store,
tree_id, cache_dir)`` on the instance's. See ``tree`` for the layout and ``ignore`` for
which files count as code.
"""

from runctl.codesync.ignore import ALWAYS_EXCLUDED, ProjectFiles, project_files
from runctl.codesync.tree import CodeTree, TreeFile, TreeUpload, build_tree, materialize, read_tree, upload_tree

__all__ = ["ALWAYS_EXCLUDED", "CodeTree", "ProjectFiles", "TreeFile", "TreeUpload", "build_tree", "materialize",
           "project_files", "read_tree", "upload_tree"]
