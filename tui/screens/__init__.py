"""The workbench's screens, one module each: the session browser (browser), the new-session
wizard (wizard), the workbench of one session (workbench), the Results view of a held-out
verdict (results) and the small dialogs they share (modals).
"""
