"""Data layer: Fashion-MNIST, image folders, kiosk frames, and the data-spec parser."""

from shoplens.data.datasets import ArrayDataset, Batch, Dataset, FolderDataset, KioskDataset
from shoplens.data.fashion_mnist import FASHION_MNIST_LABELS, load_fashion_mnist
from shoplens.data.kiosk import KioskConfig, generate_kiosk, render_scene
from shoplens.data.spec import DataSpec, open_dataset, parse_data_spec

__all__ = [
    "FASHION_MNIST_LABELS",
    "ArrayDataset",
    "Batch",
    "DataSpec",
    "Dataset",
    "FolderDataset",
    "KioskConfig",
    "KioskDataset",
    "generate_kiosk",
    "load_fashion_mnist",
    "open_dataset",
    "parse_data_spec",
    "render_scene",
]
