//! # diffgraph-nodes-core
//!
//! The built-in node types every graph needs: constants, seeded noise, image
//! and tensor files, and small tensor math. Each concern lives in its own
//! module; this file only exports them to the host.
#![deny(unsafe_code)]
mod atomic_write;
mod constants;
mod image_io;
mod math;
mod noise;
mod paths;
mod shapes;
mod tensor_io;
mod tensor_ops;

use constants::{BoolConstant, FloatConstant, IntConstant, IntList, Range, StringConstant};
use image_io::{LatentToImage, LoadImage, SaveImage};
use math::{FloatAdd, IntAdd, TensorAdd, TensorScale, TensorShape, TensorStats};
use noise::{EmptyLatent, GaussianNoise};
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
    ]
);
