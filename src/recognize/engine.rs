//! The only module that touches tract: load an ONNX file with a fixed input shape, run it.
//!
//! Keeping tract behind this small surface means one file changes when its API does (it moved
//! between 0.21 and 0.23), and the rest of the stage deals in plain slices.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};
use tract_onnx::prelude::*;

use super::dequantize;
use super::RecognizeError;

/// What to do with a dynamically quantised graph (ConvInteger, MatMulInteger) when loading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Quantized {
    /// Rewrite it into float convolutions with dequantised weights: tract runs those 30-40x
    /// faster on x86 (see `dequantize`).
    #[default]
    Dequantize,
    /// Run it as exported; kept so tests can compare the two.
    AsExported,
}

/// Element type of a model's input tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputType {
    F32,
    U8,
}

/// An input buffer, laid out as the model expects (NCHW or NHWC is the caller's business).
#[derive(Debug, Clone, Copy)]
pub enum Input<'a> {
    F32(&'a [f32]),
    U8(&'a [u8]),
}

/// One output tensor, converted to f32.
#[derive(Debug, Clone)]
pub struct Output {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// A loaded, optimised model with a fixed input shape.
pub struct OnnxModel {
    plan: Arc<TypedRunnableModel>,
    path: PathBuf,
    sha256: String,
    input_shape: Vec<usize>,
    input_type: InputType,
}

impl std::fmt::Debug for OnnxModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnnxModel")
            .field("path", &self.path)
            .field("sha256", &self.sha256)
            .field("input_shape", &self.input_shape)
            .field("input_type", &self.input_type)
            .finish()
    }
}

/// A model file to load and, for our own models, the sha256 its manifest gives.
#[derive(Debug, Clone)]
pub struct ModelFile {
    pub path: PathBuf,
    pub expected: Option<Expected>,
}

/// The sha256 a model file must have, and the manifest key that says so.
#[derive(Debug, Clone)]
pub struct Expected {
    pub key: &'static str,
    pub sha256: String,
}

impl ModelFile {
    /// A file with no expected hash (community models: their hash is reported, not checked).
    pub fn unchecked(path: &Path) -> ModelFile {
        ModelFile {
            path: path.to_path_buf(),
            expected: None,
        }
    }
}

impl OnnxModel {
    /// Reads the file once: the sha256 checked and reported is that of the very bytes tract
    /// loads (a file replaced between a check and a second read cannot slip through).
    pub fn load(
        file: &ModelFile,
        input_shape: &[usize],
        input_type: InputType,
        quantized: Quantized,
    ) -> Result<OnnxModel, RecognizeError> {
        let path = file.path.as_path();
        let started = std::time::Instant::now();
        let bytes = std::fs::read(path).map_err(|source| RecognizeError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let sha256 = hex::encode(Sha256::digest(&bytes));
        if let Some(e) = &file.expected {
            if !sha256.eq_ignore_ascii_case(&e.sha256) {
                return Err(RecognizeError::Checksum {
                    path: path.to_path_buf(),
                    key: e.key.into(),
                    expected: e.sha256.clone(),
                    actual: sha256,
                });
            }
        }
        let model_err = |e: TractError| RecognizeError::Model {
            path: path.to_path_buf(),
            reason: format!("{e:#}"),
        };
        let fact = match input_type {
            InputType::F32 => f32::fact(input_shape),
            InputType::U8 => u8::fact(input_shape),
        };
        // Some exported graphs (fast-plate-ocr cct_xs_v1) carry value_info that contradicts the
        // real shapes; tract infers them itself, so ignoring it is safe for every model.
        let onnx = tract_onnx::onnx().with_ignore_value_info(true);
        let mut proto = onnx
            .proto_model_for_read(&mut bytes.as_slice())
            .map_err(model_err)?;
        if quantized == Quantized::Dequantize {
            if let Some(graph) = proto.graph.as_mut() {
                let s = dequantize::rewrite(graph);
                if s.rewritten + s.left > 0 {
                    tracing::info!(
                        model = %path.display(),
                        rewritten = s.rewritten,
                        left_quantized = s.left,
                        "dynamically quantised model: integer convolutions rewritten to float"
                    );
                }
            }
        }
        let parsed = started.elapsed();
        let typed = onnx
            .model_for_proto_model(&proto)
            .and_then(|m| m.with_input_fact(0, fact.into()))
            .and_then(|m| m.into_typed())
            .map_err(model_err)?;
        let analysed = started.elapsed();
        let typed = typed.into_decluttered().map_err(model_err)?;
        let decluttered = started.elapsed();
        let plan = typed
            .into_optimized()
            .and_then(|m| m.into_runnable())
            .map_err(model_err)?;
        // Where start-up time goes (docs/performance.md): read + hash + parse + rewrite, ONNX
        // analysis into a typed graph, then tract's optimiser.
        tracing::debug!(
            model = %path.display(),
            parse_ms = parsed.as_millis() as u64,
            typed_ms = (analysed - parsed).as_millis() as u64,
            declutter_ms = (decluttered - analysed).as_millis() as u64,
            optimize_ms = (started.elapsed() - decluttered).as_millis() as u64,
            "model loaded"
        );
        Ok(OnnxModel {
            plan,
            path: path.to_path_buf(),
            sha256,
            input_shape: input_shape.to_vec(),
            input_type,
        })
    }

    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs the model on one input buffer of exactly `input_shape` elements.
    pub fn run(&self, input: Input<'_>) -> Result<Vec<Output>, RecognizeError> {
        let model_err = |e: TractError| RecognizeError::Model {
            path: self.path.clone(),
            reason: format!("{e:#}"),
        };
        let expected: usize = self.input_shape.iter().product();
        let (len, ty) = match input {
            Input::F32(d) => (d.len(), InputType::F32),
            Input::U8(d) => (d.len(), InputType::U8),
        };
        if len != expected || ty != self.input_type {
            return Err(RecognizeError::Shape {
                path: self.path.clone(),
                what: "input",
                expected: format!("{:?} {:?}", self.input_shape, self.input_type),
                actual: format!("{len} elements of {ty:?}"),
            });
        }
        let tensor = match input {
            Input::F32(d) => Tensor::from_shape(&self.input_shape, d),
            Input::U8(d) => Tensor::from_shape(&self.input_shape, d),
        }
        .map_err(model_err)?;
        let outputs = self
            .plan
            .run(tvec!(tensor.into_tvalue()))
            .map_err(model_err)?;
        outputs
            .iter()
            .map(|t| {
                let t = t.cast_to::<f32>().map_err(model_err)?;
                let data = t
                    .try_as_plain_ram()
                    .and_then(|v| v.as_slice::<f32>().map(<[f32]>::to_vec))
                    .map_err(model_err)?;
                Ok(Output {
                    shape: t.shape().to_vec(),
                    data,
                })
            })
            .collect()
    }
}
