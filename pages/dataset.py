"""Dataset explorer: counts, class balance, image sizes, a thumbnail browser and the leakage between splits
(identical files, near-duplicates, patients on both sides) for a dataset folder.

Folders are chosen from lists, inside the roots the operator allows (`MURA_DATA_ROOTS`, see
`mura_core.data_roots`); nothing is typed as a path. Without a root it shows what ships with the
repository: MURA v1.1's published counts, the installed model's training data (from its manifest) and
the bundled sample images, and how an operator adds a root.
"""

import math
from pathlib import Path

import streamlit as st

from dashboard.frame import page_frame

page_frame("pages/dataset.py")
st.title("Dataset explorer")

# Imported after the first paint: pandas and plotly take a second or two on a cold server.
from dashboard.common import configured_roots, image_sizes, index_root, installed_info, thumbnail  # noqa: E402
from mura_core import body_parts, charts, data_overview, data_roots, installed, mura_facts, vocabulary  # noqa: E402
from mura_core.coverage import Coverage, training_data_frame  # noqa: E402
from mura_core.datasets import DatasetError, get_layout, layout_names, stats  # noqa: E402

FORMATS = {"auto": "Detect", **{name: get_layout(name).title for name in layout_names()}}
THUMBS_PER_ROW = 6
THUMB_SIDE = 160
SIZE_SAMPLE = 500

LAYOUTS = "\n".join(f"- **{get_layout(name).title}**: {get_layout(name).description}" for name in layout_names())
NO_ROOTS = f"""\
**No dataset folder is shared on this server.** Visitors can only open folders that the operator
allows. To share some, start the app with their paths separated by `:`, for example
`{data_roots.ROOTS_VARIABLE}=/data/MURA-v1.1:/data/fracatlas streamlit run app.py`, or list them as
`{data_roots.ROOTS_SECRET} = ["/data/MURA-v1.1"]` in `.streamlit/secrets.toml`. These layouts are read:

""" + LAYOUTS


def _thumbnail_grid(rows, caption_of) -> None:
    for start in range(0, len(rows), THUMBS_PER_ROW):
        for column, row in zip(st.columns(THUMBS_PER_ROW), rows[start:start + THUMBS_PER_ROW]):
            picture = thumbnail(row["path"], THUMB_SIDE)
            if picture is None:
                column.caption(f"{Path(row['path']).name}: unreadable")
            else:
                column.image(picture, caption=caption_of(row), width="stretch")


roots = configured_roots()
if not roots:
    st.info(NO_ROOTS, icon=":material/folder_open:")
    glance_tab, training_tab, samples_tab = st.tabs(
        ["MURA v1.1 at a glance", "The installed model's training data", "Bundled sample images"])

    with glance_tab:
        st.subheader("MURA v1.1 at a glance")
        st.caption("Published figures only; no MURA image is bundled. MURA (Stanford AIMI, research-use "
                   "agreement) holds upper-extremity radiographs of seven body parts, labelled normal or "
                   "abnormal per study by radiologists. Its test set (207 studies) is not public.")
        totals = data_overview.mura_totals()
        cols = st.columns(4)
        cols[0].metric("Train images", f"{totals.loc['train', 'images']:,}")
        cols[1].metric("Train studies", f"{totals.loc['train', 'studies']:,}")
        cols[2].metric("Valid images", f"{totals.loc['valid', 'images']:,}")
        cols[3].metric("Valid studies", f"{totals.loc['valid', 'studies']:,}")
        st.plotly_chart(data_overview.mura_images_figure())
        st.plotly_chart(data_overview.mura_studies_figure())
        st.caption("Normal vs abnormal is shown for studies, as the paper publishes it (Table 1): the paper "
                   "gives no per-body-part image counts by label. Image counts come from MURA v1.1's image "
                   "lists. Table 1 counts 13,457 train and 1,199 valid studies; the released v1.1 folders "
                   "number 13,460 and 1,201.")
        st.dataframe(data_overview.mura_study_table(), width="content")
        st.caption(f"Source: {mura_facts.CITATION}")

    with training_tab:
        st.subheader("The installed model's training data")
        info = installed_info()
        coverage = Coverage.from_info(info)
        counts = training_data_frame(info)
        if coverage is not None:
            st.markdown(f"Trained on **{coverage.describe()}**. Other body parts are outside its training "
                        "data: the Diagnose page and the CLI warn that its verdict is not meaningful there.")
            if coverage.notes:
                st.caption(coverage.notes)
        if counts.empty:
            st.caption("The installed weights do not record their training data.")
        else:
            label = coverage.positive_label if coverage is not None else "abnormal"
            split_file = (info.get("training_data") or {}).get("split_file")
            st.plotly_chart(data_overview.training_split_figure(counts, label))
            st.markdown("**Class balance**")
            st.dataframe(data_overview.training_balance(counts, label), width="content")
            st.caption("Counts recorded in the installed ensemble's manifest"
                       + (f", from the committed split `{split_file}`." if split_file else ".")
                       + " An image flagged with several body parts is shown as *Mixed*.")

    with samples_tab:
        samples, _ = installed.read_samples(installed.weights_folder())
        st.subheader("Bundled sample images")
        if samples.empty:
            st.caption("No sample images are installed with the current weights.")
        else:
            st.caption(f"{len(samples)} image(s) in {samples['study'].nunique()} sample studies, used by "
                       "**Try a sample study** on the Diagnose page.")
            _thumbnail_grid(samples.to_dict("records"),
                            lambda r: f"{r['study']} · {vocabulary.label_text(r['label']) or 'unlabelled'}")
            attributions = sorted({a for a in samples["attribution"] if a})
            if attributions:
                st.caption("Attribution: " + "; ".join(attributions))
    st.stop()

root_col, folder_col, format_col = st.columns([2, 3, 1])
if len(roots) == 1:
    root = roots[0]
    root_col.markdown(f"**Dataset root**  \n{root.label}")
else:
    root = root_col.selectbox("Dataset root", roots, format_func=lambda r: r.label,
                              help="The folders the operator shares on this server.")
choice = folder_col.selectbox("Folder", data_roots.folders_inside(root.path),
                              format_func=lambda f: root.label if f == "." else f"{root.label}/{f}",
                              help="The root itself or a folder inside it (two levels deep); nothing is uploaded.")
layout = format_col.selectbox("Layout", list(FORMATS), format_func=FORMATS.get)
listed = st.session_state.setdefault("listed_folders", {})  # folders already scanned in this session
try:
    folder = data_roots.resolve_inside(root.path, choice)
    if str(folder) not in listed:
        bar = st.progress(0.0, text="Listing the folder...")
        listed[str(folder)] = data_roots.scan_folder(
            folder, root.path, progress=lambda n: bar.progress(min(n / data_roots.MAX_SCAN_FILES, 1.0),
                                                               text=f"Listing the folder: {n:,} files..."))
        bar.empty()
    index = index_root(str(folder), layout)
except data_roots.RootError as exc:
    st.error(f"This folder cannot be read: {exc}", icon=":material/block:")
    st.stop()
except (DatasetError, ValueError, OSError) as exc:
    st.error(f"This folder cannot be indexed: {root.shown(exc)}",
             icon=":material/error:")
    st.markdown("These layouts are read:\n\n" + LAYOUTS)
    st.stop()

table = index.table
summary = stats.dataset_summary(table)
st.caption(f"Layout: **{FORMATS.get(index.format, index.format)}** · "
           f"{root.label if choice == '.' else f'{root.label}/{choice}'} · {listed[str(folder)]:,} files")
cols = st.columns(5)
cols[0].metric("Images", f"{summary['images']:,}")
cols[1].metric("Studies", f"{summary['studies']:,}")
cols[2].metric("Patients", f"{summary['patients']:,}" if summary["patients"] else "—",
               help=None if summary["patients"] else "This dataset records no patient ids.")
for column, unit in ((cols[3], "images"), (cols[4], "studies")):
    abnormal, total = summary[f"abnormal_{unit}"], max(summary[unit], 1)
    column.metric(f"Abnormal {unit}", f"{abnormal:,}", f"{abnormal / total:.1%} of {unit}", delta_color="off",
                  delta_arrow="off")
layout_notes = get_layout(index.format).notes if index.format in layout_names() else ""
if layout_notes:
    st.caption(layout_notes)
if index.format == "mura":
    comparison = mura_facts.compare_with_published(table)
    differences = mura_facts.comparison_summary(comparison)
    with st.expander("Compared with MURA v1.1's published counts: "
                     + ("differences found" if differences else "it matches"), icon=":material/fact_check:"):
        for line in differences or [mura_facts.MATCH_TEXT]:
            st.markdown(f"- {line}")
        st.dataframe(comparison, hide_index=True)

if index.problems:
    with st.expander(f"{len(index.problems)} inconsistencies found while indexing",
                     icon=":material/warning:"):
        st.dataframe(stats.problems_frame(index.problems).map(root.shown), hide_index=True)

counts_tab, balance_tab, sizes_tab, browse_tab = st.tabs(
    ["Counts", "Class balance", "Image sizes", "Browse images"])

with counts_tab:
    unit = st.segmented_control("Count", ["images", "studies"], default="images", required=True)
    st.plotly_chart(charts.counts_figure(table, unit))
    st.dataframe(stats.count_table(table, unit), width="content")

with balance_tab:
    st.plotly_chart(charts.class_balance_figure(table))

with sizes_tab:
    paths = tuple(stats.sample_paths(table, SIZE_SAMPLE))
    sizes = image_sizes(paths)
    if sizes.empty:
        st.caption("No image size could be read.")
    else:
        figure_col, table_col = st.columns([3, 1], gap="large")
        figure_col.plotly_chart(charts.image_size_figure(sizes))
        table_col.markdown("**Most common sizes**")
        table_col.dataframe(stats.common_sizes(sizes), hide_index=True)
        st.caption(f"Sizes read from the file headers of {len(sizes)} image(s) chosen at random "
                   f"(at most {SIZE_SAMPLE}).")

with browse_tab:
    split_col, part_col, label_col, size_col = st.columns(4)
    splits = split_col.multiselect("Split", summary["splits"], placeholder="all")
    parts = part_col.multiselect("Body part", summary["body_parts"], format_func=body_parts.body_part_label,
                                 placeholder="all")
    labels = label_col.multiselect("Label", list(vocabulary.LABEL_NAMES.values()), placeholder="all")
    per_page = size_col.selectbox("Per page", [12, 24, 48], index=1)
    chosen = stats.filter_table(table, splits, parts, labels)
    pages = max(1, math.ceil(len(chosen) / per_page))
    page = st.columns(4)[0].number_input(f"Page (of {pages})", min_value=1, max_value=pages, value=1, step=1)
    start = (int(page) - 1) * per_page
    if chosen.empty:
        st.caption("No image matches these filters.")
    else:
        end = min(start + per_page, len(chosen))
        st.caption(f"{len(chosen):,} image(s) match; showing {start + 1}-{end}.")
    _thumbnail_grid(
        chosen.iloc[start:start + per_page].to_dict("records"),
        lambda r: " · ".join((vocabulary.LABEL_NAMES.get(r["label"], "?"),
                              body_parts.body_part_label(r["body_part"]) or "-", Path(r["path"]).name)),
    )


def leakage_section(table) -> None:
    """Identical files, near-duplicates and shared patients between the splits, with a few pairs side by side."""
    from dashboard.common import leakage_report, memory_summary
    from mura_core.datasets import leakage

    st.subheader("Leakage between splits")
    if not st.toggle("Find identical and near-duplicate images across splits (reads every file once)",
                     help="Identical bytes (SHA-256) and the same radiograph re-encoded, resized, slightly cropped, "
                          "with changed contrast, flipped or turned by a quarter (perceptual hash within "
                          f"{leakage.NEAR_DISTANCE} of 64 bits)."):
        return
    report = leakage_report(table)
    if report.summary.empty:
        st.caption("This dataset has fewer than two splits.")
    else:
        summary = report.summary if report.has_patients else report.summary.drop(columns="patients")
        st.dataframe(summary.rename(columns={"split_a": "split", "split_b": "against",
                                             "identical": "identical files", "near": "near-duplicates",
                                             "patients": "patients on both sides"}), hide_index=True)
    st.dataframe(report.within.rename(columns={"identical": "identical copy inside", "near": "near-duplicate inside"}),
                 hide_index=True)
    st.caption(" · ".join(leakage.summary_lines(report)[-1:]))
    memory = memory_summary(table)
    if not memory.empty:
        st.dataframe(memory.rename(columns={"images": "images scored", "accuracy": "memory baseline accuracy",
                                            "auc": "memory baseline AUC"}), hide_index=True)
        st.caption("Memory baseline: each image gets the label of the most alike picture of the other split, "
                   "with no model at all. Near 1, a model can pass the split by memory alone; well above 0.5, "
                   "the splits still share altered copies or a look that gives the label away.")
    for pair in leakage.example_pairs(report).to_dict("records"):
        left, right = st.columns(2)
        for column, side in ((left, "a"), (right, "b")):
            picture = thumbnail(pair[f"path_{side}"], 2 * THUMB_SIDE)
            caption = f"{pair[f'split_{side}']} · {Path(pair[f'path_{side}']).name}"
            if picture is None:
                column.caption(f"{caption}: unreadable")
            else:
                column.image(picture, caption=caption, width="stretch")
        kind = {"turned": "near-duplicate after a flip or a quarter turn", "near": "near-duplicate"}.get(
            pair["kind"], pair["kind"])
        st.caption(f"{kind} (distance {pair['distance']})")


leakage_section(table)
