"""Dataset: browse patients and slices, the three MRI channels, the ground truth and tumour sizes.

Without a usable data folder (a demo from a snapshot on a machine without the LGG data), or in demo mode
when only the shipped sample is there, the page browses the slices the store's slice pack holds (those
behind the stored results), labelled as such."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from pages._data import (metrics_frame, pack_arrays, pack_index, slice_arrays, slice_index, tumour_sizes,
                         sample_notice)
from pages._errors import explain, guard
from pages._settings import PAGE_FILES, ensure_app, read_only
from segunc import settings, viz
from segunc.data import CHANNELS

ensure_app()

ss = st.session_state


def pack_label() -> str:
    """What the slice pack is called here: the snapshot's (demo mode) or the results store's."""
    return "the snapshot" if read_only() else "the results store's slice pack"


def load_index() -> tuple[pd.DataFrame, bool]:
    """(the slices to browse, whether they come from the store's slice pack). The data folder's slices, or
    the pack's when the folder is unusable (or, in a demo, only the shipped sample); stops the page with a
    warning when there is neither."""
    root = settings.app_data_dir()
    pack = pack_index()
    has_pack = pack is not None and len(pack) > 0
    problem = None
    if not (has_pack and read_only() and settings.using_sample()):  # a demo shows what its snapshot holds
        try:
            idx = slice_index(str(root))
        except Exception as exc:  # noqa: BLE001
            problem = exc
        else:
            st.caption(f"LGG MRI (Buda et al. 2019) from `{root}`: {idx['patient_id'].nunique()} patients, "
                       f"{len(idx):,} slices.")
            return idx, False
    if has_pack:
        n_pat = pack["patient_id"].nunique()
        st.info(f"**Slices from {pack_label()}** — {len(pack):,} slice{'s' if len(pack) != 1 else ''} of {n_pat} "
                f"patient{'s' if n_pat != 1 else ''}: those behind the stored results (image channels and ground truth, stored losslessly), "
                "not the whole dataset"
                + (f"; no LGG data folder at `{root}`." if problem is not None else "."),
                icon=":material/inventory_2:")
        return pack, True
    st.warning(f"No LGG data to browse at `{root}`. {explain(problem)}", icon=":material/folder_off:")
    st.stop()


def pick_patient(idx: pd.DataFrame) -> tuple[str, pd.DataFrame, bool]:
    """Split, patient (``?patient=`` deep link) and the tumour-only switch → (folder, its slices, tumour only)."""
    c1, c2, c3 = st.columns([1, 3, 1])
    splits = ["all", "train", "val", "test"]
    split = c1.selectbox("Split", splits, index=2 if (idx["split"] == "val").any() else 0, key="ds_split")
    sub = idx if split == "all" else idx[idx["split"] == split]
    patients = sub.groupby("patient_folder", sort=True).size()
    if patients.empty:
        st.info(f"No patients in the {split} split.")
        st.stop()
    qp_patient = st.query_params.get("patient")
    if qp_patient in patients.index and ss.get("_ds_qp") != qp_patient:
        ss["ds_patient"] = qp_patient
        ss["_ds_qp"] = qp_patient
    if ss.get("ds_patient") not in patients.index:
        ss.pop("ds_patient", None)
    folder = c2.selectbox("Patient", list(patients.index), key="ds_patient",
                          format_func=lambda f: f"{f}  ·  {patients[f]} slices")
    tumour_only = c3.toggle("Tumour slices only", value=False, key="ds_tumour_only")
    st.query_params["patient"] = folder
    pat = sub[sub["patient_folder"] == folder].sort_values("index").reset_index(drop=True)
    if "tumour_px" not in pat:  # the slice pack knows its tumour sizes; files are read once here
        pat = pat.assign(tumour_px=tumour_sizes(tuple(pat["mask_path"])))
    return folder, pat, tumour_only


def pick_slice(pat: pd.DataFrame, tumour_only: bool) -> tuple[int, list[int]]:
    """The slice slider (default: the largest tumour); returns (slice number, the numbers offered)."""
    shown = pat[pat["tumour_px"] > 0] if tumour_only else pat
    if shown.empty:
        st.info("This patient has no tumour slices." if tumour_only else "This patient has no slices.")
        st.stop()
    numbers = shown["index"].tolist()
    if ss.get("_ds_pending") in numbers:  # a bar clicked in the profile below
        ss["ds_slice"] = ss.pop("_ds_pending")
    if ss.get("ds_slice") not in numbers:
        ss["ds_slice"] = numbers[0] if not (shown["tumour_px"] > 0).any() else \
            int(shown.loc[shown["tumour_px"].idxmax(), "index"])
    return st.select_slider("Slice number", options=numbers, key="ds_slice"), numbers


def slice_view(row, n: int, n_slices: int, packed: bool) -> None:
    """Key figures of the slice, its three channels and FLAIR with the ground truth."""
    image, mask = pack_arrays(row["image"]) if packed else slice_arrays(row["slice_id"])
    area = int(mask.sum())
    m1, m2, m3, m4 = st.columns(4)
    if packed:  # a pack holds only some slices of a volume: the number, and how many of them are here
        m1.metric("Slice", f"{n}", help=f"{n_slices} slice(s) of this patient in {pack_label()}")
    else:
        m1.metric("Slice", f"{n} of {n_slices}")
    m2.metric("Tumour", f"{area:,} px", help="ground-truth foreground pixels")
    m3.metric("Share of image", f"{area / mask.size:.2%}")
    m4.metric("Split", row["split"])
    cols = st.columns(4)
    for i, (col, name) in enumerate(zip(cols, CHANNELS)):
        col.image(viz.to_rgb(image, i), caption=name, width="stretch")
    cols[3].image(viz.overlay(image, None, mask, alpha=0.45), caption="FLAIR + ground truth", width="stretch")
    if packed:
        st.caption(f"{row['slice_id']}: from {pack_label()}.")


def tumour_profile(pat: pd.DataFrame, n: int, numbers: list[int]) -> None:
    """Tumour pixels per slice through the volume; a clicked bar opens that slice."""
    st.markdown("**Tumour size through the volume** (click a bar to open that slice)")
    fig = viz.tumour_profile_figure(pat[["index", "tumour_px"]].clip(lower=0), current=n)
    event = st.plotly_chart(fig, width="stretch", on_select="rerun", selection_mode="points", key="ds_profile",
                            config={"displaylogo": False})
    pts = event.selection.points if event else []
    if pts:
        picked = int(pts[0]["x"])
        if picked != n and picked in numbers and ss.get("_ds_last_pick") != picked:
            ss["_ds_last_pick"] = picked
            ss["_ds_pending"] = picked
            st.rerun()


def stored_results_link(slice_id: str) -> None:
    """A link to the Compare page when the store holds results of this slice."""
    df = metrics_frame()
    have = df[df["slice_id"] == slice_id] if len(df) else df
    if len(have):
        st.page_link(PAGE_FILES["compare"], label=f"Compare the {len(have)} stored results of this slice",
                     icon=":material/view_column:", query_params={"slice": slice_id})


def patient_table(pat: pd.DataFrame, folder: str) -> None:
    with st.expander("All slices of this patient"):
        table = pat[["slice_id", "index", "split", "tumour_px"]].rename(columns={"index": "number"})
        st.dataframe(table, hide_index=True, width="stretch")
        st.download_button("Download CSV", table.to_csv(index=False), file_name=f"{folder}_slices.csv",
                           mime="text/csv", icon=":material/download:")


st.title("Dataset")
sample_notice()

with guard("The dataset browser"):
    index, from_pack = load_index()
    patient, slices, only_tumour = pick_patient(index)
    number, offered = pick_slice(slices, only_tumour)
    current = slices[slices["index"] == number].iloc[0]
    slice_view(current, number, len(slices), from_pack)
    tumour_profile(slices, number, offered)
    stored_results_link(current["slice_id"])
    patient_table(slices, patient)
