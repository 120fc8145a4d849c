"""Figures and tables of the data to explore without a dataset on disk.

Two sources, both shipped with the repository: MURA v1.1's published counts (`mura_facts`) and the
installed ensemble's training data as its manifest records it (`coverage.training_data_frame`).
Pure functions of their arguments, like `charts`.
"""

from __future__ import annotations

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go

from . import mura_facts
from .body_parts import body_part_label
from .charts import ABNORMAL_COLOR, LABEL_COLORS, NORMAL_COLOR
from .vocabulary import LABEL_NAMES

SPLIT_ORDER = ("train", "val", "valid", "test")
_TRAINING_LABELS = {"negative": LABEL_NAMES[0], "positive": LABEL_NAMES[1]}


def _part_order(parts) -> list[str]:
    return sorted({body_part_label(p) for p in parts})


def mura_totals() -> pd.DataFrame:
    """MURA v1.1 per split: images, studies, normal and abnormal studies, with a total row."""
    totals = mura_facts.published_totals().loc[list(mura_facts.SPLITS)]
    totals.loc["total"] = totals.sum()
    totals.index.name = "split"
    return totals.astype(int)


def mura_images_figure() -> go.Figure:
    """Images per body part in MURA v1.1's train and valid splits (published image lists), one panel each."""
    frame = mura_facts.published_images()
    frame["body part"] = frame["body_part"].map(body_part_label)
    fig = px.bar(frame, x="body part", y="images", facet_col="split", facet_col_spacing=0.06,
                 color_discrete_sequence=["#5E7A99"],
                 category_orders={"body part": _part_order(frame["body_part"]), "split": list(mura_facts.SPLITS)},
                 text="images", title="MURA v1.1: images per body part")
    fig.update_yaxes(matches=None, showticklabels=True)
    fig.update_traces(textposition="outside", cliponaxis=False)
    fig.for_each_annotation(lambda a: a.update(text=a.text.replace("split=", "")))
    fig.update_layout(height=420, margin=dict(t=80, b=40))
    return fig


def mura_studies_figure() -> go.Figure:
    """Studies per body part, normal vs abnormal, in MURA v1.1's train and valid splits (paper, Table 1)."""
    frame = mura_facts.published_studies()
    frame["body part"] = frame["body_part"].map(body_part_label)
    fig = px.bar(frame, x="body part", y="studies", color="label", facet_col="split", facet_col_spacing=0.06,
                 barmode="stack",
                 color_discrete_map=LABEL_COLORS,
                 category_orders={"body part": _part_order(frame["body_part"]), "split": list(mura_facts.SPLITS),
                                  "label": list(LABEL_NAMES.values())},
                 title="MURA v1.1: studies per body part, normal vs abnormal (paper, Table 1)")
    fig.update_yaxes(matches=None, showticklabels=True)
    fig.for_each_annotation(lambda a: a.update(text=a.text.replace("split=", "")))
    fig.update_layout(height=420, margin=dict(t=80, b=40), legend_title_text="")
    return fig


def mura_study_table() -> pd.DataFrame:
    """Studies per body part (rows) by split and label (columns), with MURA's image counts alongside."""
    studies = mura_facts.published_studies().pivot_table(index="body_part", columns=["split", "label"],
                                                          values="studies", aggfunc="sum")
    images = mura_facts.published_images().pivot_table(index="body_part", columns="split", values="images")
    table = pd.DataFrame(index=studies.index)
    for split in mura_facts.SPLITS:
        table[f"{split} images"] = images[split]
        for label in LABEL_NAMES.values():
            table[f"{split} studies {label}"] = studies[(split, label)]
    table.index = table.index.map(body_part_label)
    table.index.name = "body part"
    return table.astype(int)


def _splits(frame: pd.DataFrame) -> list[str]:
    present = list(dict.fromkeys(frame["split"]))
    return [s for s in SPLIT_ORDER if s in present] + [s for s in present if s not in SPLIT_ORDER]


def training_split_figure(counts: pd.DataFrame, positive_label: str = "abnormal") -> go.Figure:
    """Images per body part, positive vs negative, one panel per split, of an ensemble's training data.

    Args:
        counts: `coverage.training_data_frame` (split, body_part, label "positive"/"negative", images).
        positive_label: what the positive class means ("fracture"), for the legend.
    """
    names = {"negative": f"no {positive_label}", "positive": positive_label}
    frame = counts.assign(**{"body part": counts["body_part"].map(lambda p: body_part_label(p) or "unknown"),
                             "class": counts["label"].map(names)})
    fig = px.bar(frame, x="body part", y="images", color="class", facet_col="split", facet_col_spacing=0.06,
                 barmode="stack",
                 color_discrete_map={names["negative"]: NORMAL_COLOR, names["positive"]: ABNORMAL_COLOR},
                 category_orders={"split": _splits(frame), "class": [names["negative"], names["positive"]],
                                  "body part": sorted(frame["body part"].unique())},
                 title="Images per split and body part")
    fig.update_yaxes(matches=None, showticklabels=True)
    fig.for_each_annotation(lambda a: a.update(text=a.text.replace("split=", "")))
    fig.update_layout(height=400, margin=dict(t=80, b=40), legend_title_text="")
    return fig


def training_balance(counts: pd.DataFrame, positive_label: str = "abnormal") -> pd.DataFrame:
    """Per split: images, negative and positive images and the positive share, with a total row.

    Args:
        counts: `coverage.training_data_frame`.
        positive_label: what the positive class means, used in the column names.
    """
    wide = counts.pivot_table(index="split", columns="label", values="images", aggfunc="sum", fill_value=0)
    wide = wide.reindex(columns=["negative", "positive"], fill_value=0).reindex(_splits(counts))
    wide.loc["total"] = wide.sum()
    table = pd.DataFrame({"images": wide["negative"] + wide["positive"], f"no {positive_label}": wide["negative"],
                          positive_label: wide["positive"]})
    table[f"{positive_label} share"] = (table[positive_label] / table["images"]).map("{:.1%}".format)
    table.index.name = "split"
    return table
