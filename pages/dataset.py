"""Dataset: browse patients and slices, the three MRI channels, the ground truth and tumour sizes."""
from __future__ import annotations

import streamlit as st

from pages._common import (PAGE_FILES, data_root, ensure_app, explain, guard, metrics_frame, slice_arrays, slice_index,
                           tumour_sizes)
from segunc import viz

ensure_app()

st.title("Dataset")

with guard("The dataset browser"):
    from segunc.data import CHANNELS

    root = data_root()
    try:
        idx = slice_index(str(root))
    except Exception as exc:  # noqa: BLE001
        st.warning(f"No LGG data to browse at `{root}`. {explain(exc)}", icon=":material/folder_off:")
        st.stop()
    st.caption(f"LGG MRI (Buda et al. 2019) from `{root}`: {idx['patient_id'].nunique()} patients, {len(idx):,} slices.")

    c1, c2, c3 = st.columns([1, 3, 1])
    split = c1.selectbox("Split", ["all", "train", "val", "test"], index=2, key="ds_split")
    sub = idx if split == "all" else idx[idx["split"] == split]
    patients = sub.groupby("patient_folder", sort=True).size()
    if patients.empty:
        st.info(f"No patients in the {split} split.")
        st.stop()
    qp_patient = st.query_params.get("patient")
    if qp_patient in patients.index and st.session_state.get("_ds_qp") != qp_patient:
        st.session_state["ds_patient"] = qp_patient
        st.session_state["_ds_qp"] = qp_patient
    if st.session_state.get("ds_patient") not in patients.index:
        st.session_state.pop("ds_patient", None)
    folder = c2.selectbox("Patient", list(patients.index), key="ds_patient",
                          format_func=lambda f: f"{f}  ·  {patients[f]} slices")
    tumour_only = c3.toggle("Tumour slices only", value=False, key="ds_tumour_only")
    st.query_params["patient"] = folder

    pat = sub[sub["patient_folder"] == folder].sort_values("index").reset_index(drop=True)
    pat = pat.assign(tumour_px=tumour_sizes(tuple(pat["mask_path"])))
    shown = pat[pat["tumour_px"] > 0] if tumour_only else pat
    if shown.empty:
        st.info("This patient has no tumour slices." if tumour_only else "This patient has no slices.")
        st.stop()
    numbers = shown["index"].tolist()
    if st.session_state.get("_ds_pending") in numbers:  # a bar clicked in the profile below
        st.session_state["ds_slice"] = st.session_state.pop("_ds_pending")
    if st.session_state.get("ds_slice") not in numbers:
        st.session_state["ds_slice"] = numbers[0] if not (shown["tumour_px"] > 0).any() else \
            int(shown.loc[shown["tumour_px"].idxmax(), "index"])
    n = st.select_slider("Slice number", options=numbers, key="ds_slice")
    row = pat[pat["index"] == n].iloc[0]

    image, mask = slice_arrays(row["slice_id"])
    area = int(mask.sum())
    m1, m2, m3, m4 = st.columns(4)
    m1.metric("Slice", f"{n} of {len(pat)}")
    m2.metric("Tumour", f"{area:,} px", help="ground-truth foreground pixels")
    m3.metric("Share of image", f"{area / mask.size:.2%}")
    m4.metric("Split", row["split"])

    cols = st.columns(4)
    for i, (col, name) in enumerate(zip(cols, CHANNELS)):
        col.image(viz.to_rgb(image, i), caption=name, width="stretch")
    cols[3].image(viz.overlay(image, None, mask, alpha=0.45), caption="FLAIR + ground truth", width="stretch")

    st.markdown("**Tumour size through the volume** (click a bar to open that slice)")
    fig = viz.tumour_profile_figure(pat[["index", "tumour_px"]].clip(lower=0), current=n)
    event = st.plotly_chart(fig, width="stretch", on_select="rerun", selection_mode="points", key="ds_profile",
                            config={"displaylogo": False})
    pts = event.selection.points if event else []
    if pts:
        picked = int(pts[0]["x"])
        if picked != n and picked in numbers and st.session_state.get("_ds_last_pick") != picked:
            st.session_state["_ds_last_pick"] = picked
            st.session_state["_ds_pending"] = picked
            st.rerun()

    df = metrics_frame()
    have = df[df["slice_id"] == row["slice_id"]] if len(df) else df
    if len(have):
        st.page_link(PAGE_FILES["compare"], label=f"Compare the {len(have)} stored results of this slice",
                     icon=":material/view_column:", query_params={"slice": row["slice_id"]})

    with st.expander("All slices of this patient"):
        table = pat[["slice_id", "index", "split", "tumour_px"]].rename(columns={"index": "number"})
        st.dataframe(table, hide_index=True, width="stretch")
        st.download_button("Download CSV", table.to_csv(index=False), file_name=f"{folder}_slices.csv",
                           mime="text/csv", icon=":material/download:")
