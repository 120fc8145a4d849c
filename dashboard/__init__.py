"""The Streamlit dashboard's shared parts: the page frame (`frame`) and the cached runs and reads (`common`).

They live outside `pages/` because Streamlit treats every Python file in `pages/` as a page.
"""
