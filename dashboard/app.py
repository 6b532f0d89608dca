"""The callmood dashboard: `callmood dashboard RESULTS` runs
`streamlit run app.py -- --results RESULTS` (or set $CALLMOOD_RESULTS)."""

import streamlit as st

from callmood.dashboard import app_data
from callmood.results.location import LocationError
from callmood.results.store import ResultsError

st.set_page_config(page_title="callmood", layout="wide")

path = app_data.results_arg()
if not path:
    st.error("No results folder: run `callmood dashboard RESULTS`.")
    st.stop()
try:
    results = app_data.open_results(path)
except (ResultsError, LocationError) as exc:
    st.error(f"Cannot open the results: {app_data.literal(exc)}")
    st.stop()

app_data.sidebar_filters()
st.sidebar.caption(f"Results: {app_data.literal(results.path)}")
page = st.navigation([
    st.Page(app_data.PAGES["overview"], title="Overview", default=True),
    st.Page(app_data.PAGES["agents"], title="Agents and queues", url_path="agents"),
    st.Page(app_data.PAGES["explorer"], title="Call explorer", url_path="explorer"),
])
page.run()
