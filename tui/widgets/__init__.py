"""What the screens draw, one module each: the search tree and its labels (search_tree), the
selected node's detail tabs (node_detail), the workbench's status lines (status_bar), small
text plots (plots) and a held-out verdict's tables and side-by-side items (verdict).
"""
