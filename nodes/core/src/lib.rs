//! # diffgraph-nodes-core
//!
//! The built-in node types every graph needs: constants, seeded noise, image
//! and tensor files, small tensor math, and the image, mask and batch
//! operations of ComfyUI's core nodes (resizing, masks, batches). Each concern lives in its own
//! module; this file only exports them to the host.
#![deny(unsafe_code)]
mod atomic_write;
mod batch;
mod bislerp;
mod constants;
mod image_io;
mod image_ops;
mod lanczos;
mod masks;
mod math;
mod noise;
#[cfg(test)]
mod parity_tests;
mod paths;
mod resize;
mod shapes;
mod tensor_io;
mod tensor_ops;

use batch::{BatchConcat, BatchRepeat, BatchSlice};
use constants::{BoolConstant, FloatConstant, IntConstant, IntList, Range, StringConstant};
use image_io::{LatentToImage, LoadImage, SaveImage};
use image_ops::{Composite, Invert, SolidImage};
use masks::{ImageToMask, LoadMask, MaskToImage};
use math::{FloatAdd, IntAdd, TensorAdd, TensorScale, TensorShape, TensorStats};
use noise::{EmptyLatent, GaussianNoise};
use resize::Resize;
use tensor_io::{LoadTensor, SaveTensor};
use tensor_ops::{TensorMul, TensorSelect};

diffgraph_sdk::export_plugin!(
    "core",
    [
        IntConstant,
        FloatConstant,
        BoolConstant,
        StringConstant,
        IntList,
        Range,
        GaussianNoise,
        EmptyLatent,
        SaveImage,
        LoadImage,
        LatentToImage,
        SaveTensor,
        LoadTensor,
        TensorAdd,
        TensorScale,
        TensorStats,
        TensorShape,
        TensorMul,
        TensorSelect,
        FloatAdd,
        IntAdd,
        Resize,
        LoadMask,
        MaskToImage,
        ImageToMask,
        BatchSlice,
        BatchRepeat,
        BatchConcat,
        Invert,
        SolidImage,
        Composite,
    ]
);
