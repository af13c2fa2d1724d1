//! Rewrites dynamically quantised ONNX graphs into float ones when a model is loaded.
//!
//! onnxruntime's `quantize_dynamic` turns every convolution into
//!
//! ```text
//! x -> DynamicQuantizeLinear -> (xq, xs, xzp)
//! Mul(xs, w_scale)                      -> s
//! ConvInteger(xq, wq, xzp, w_zp)        -> yi      (MatMulInteger likewise)
//! Cast(yi, to = float)                  -> yc
//! Mul(yc, s)                            -> y
//! ```
//!
//! tract runs that chain slower than a float convolution (its integer kernels depend on the CPU:
//! 370 ms to 3,400 ms per photo for the community detector on x86 machines we measured), so each
//! chain whose weight, weight zero point and weight scale are constant becomes
//! `Conv(x, (wq - w_zp) * w_scale [, bias]) -> y`. The float path skips the activation rounding:
//! boxes and texts stay (tests/shared_data.rs), detector scores move by up to 0.17 on the sample
//! photos. Dequantising the activation too (`Conv((xq - xzp) * xs, ...)`) was measured and
//! dropped: it kept only 15% of the gain and still moved scores, because every later
//! DynamicQuantizeLinear rounds a slightly different input. A chain that differs in any way
//! (per-channel scales, weights computed at run time, external data) is left as it is and logged
//! at debug: it still runs, only slowly.

use std::collections::{HashMap, HashSet};

use tract_onnx::pb::{tensor_proto::DataType, GraphProto, TensorProto};

/// Why one quantised node was left as it is (never an error of the model: it still runs).
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum Unrecognised {
    #[error("{0} is not produced by DynamicQuantizeLinear")]
    NotDynamic(String),
    #[error("{0} is not a constant initializer")]
    NotConstant(String),
    #[error("initializer {name}: {reason}")]
    Tensor { name: String, reason: &'static str },
    #[error("output {0} is not consumed by exactly Cast(to float) then Mul by the scale")]
    Tail(String),
    #[error("scale {0} is not Mul(input scale, constant weight scale)")]
    Scale(String),
}

/// How many quantised nodes the rewrite turned into float ones, and how many it left.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub rewritten: usize,
    pub left: usize,
}

/// One recognised chain, by node index.
struct Chain {
    int_node: usize,
    cast: usize,
    mul: usize,
    /// The float tensor that DynamicQuantizeLinear quantised.
    float_input: String,
    weight: TensorProto,
    /// The Add of a per-channel bias after a convolution, and the bias, folded into the Conv.
    bias: Option<(usize, String)>,
}

/// Rewrites every recognised chain of `graph` in place (see the module doc).
pub fn rewrite(graph: &mut GraphProto) -> Summary {
    let mut summary = Summary::default();
    let chains: Vec<Chain> = {
        let ctx = Context::new(graph);
        graph
            .node
            .iter()
            .enumerate()
            .filter(|(_, n)| n.op_type == "ConvInteger" || n.op_type == "MatMulInteger")
            .filter_map(|(i, n)| match ctx.chain(i) {
                Ok(c) => Some(c),
                Err(why) => {
                    tracing::debug!(node = %n.name, op = %n.op_type, "left quantised: {why}");
                    summary.left += 1;
                    None
                }
            })
            .collect()
    };
    if chains.is_empty() {
        return summary;
    }
    let mut drop: HashSet<usize> = HashSet::new();
    for c in chains {
        // The Conv takes over the output of the last node it replaces.
        let last = c.bias.as_ref().map_or(c.mul, |(add, _)| *add);
        let output = graph.node[last].output.clone();
        let node = &mut graph.node[c.int_node];
        node.op_type = if node.op_type == "ConvInteger" {
            "Conv".into()
        } else {
            "MatMul".into()
        };
        node.input = vec![c.float_input, c.weight.name.clone()];
        node.output = output;
        if let Some((add, bias)) = c.bias {
            node.input.push(bias);
            drop.insert(add);
        }
        graph.initializer.push(c.weight);
        drop.insert(c.cast);
        drop.insert(c.mul);
        summary.rewritten += 1;
    }
    let mut i = 0;
    graph.node.retain(|_| {
        i += 1;
        !drop.contains(&(i - 1))
    });
    prune(graph);
    summary
}

/// Removes the DynamicQuantizeLinear, scale Mul and bias Reshape nodes, and the initializers,
/// that nothing reads any more; only those kinds, so nothing the rewrite did not orphan is touched.
fn prune(graph: &mut GraphProto) {
    loop {
        let used = used_names(graph);
        let before = graph.node.len();
        graph.node.retain(|n| {
            let prunable = matches!(
                n.op_type.as_str(),
                "DynamicQuantizeLinear" | "Mul" | "Reshape"
            );
            !prunable || n.output.iter().any(|o| used.contains(o.as_str()))
        });
        if graph.node.len() == before {
            break;
        }
    }
    let used = used_names(graph);
    graph
        .initializer
        .retain(|t| used.contains(t.name.as_str()) || graph.input.iter().any(|i| i.name == t.name));
}

fn used_names(graph: &GraphProto) -> HashSet<String> {
    graph
        .node
        .iter()
        .flat_map(|n| n.input.iter().cloned())
        .chain(graph.output.iter().map(|o| o.name.clone()))
        .collect()
}

/// Who produces and who consumes each tensor name, and the constant initializers.
struct Context<'a> {
    graph: &'a GraphProto,
    producer: HashMap<&'a str, usize>,
    consumers: HashMap<&'a str, Vec<usize>>,
    inits: HashMap<&'a str, &'a TensorProto>,
}

impl<'a> Context<'a> {
    fn new(graph: &'a GraphProto) -> Context<'a> {
        let mut producer = HashMap::new();
        let mut consumers: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, n) in graph.node.iter().enumerate() {
            for o in &n.output {
                producer.insert(o.as_str(), i);
            }
            for inp in &n.input {
                consumers.entry(inp.as_str()).or_default().push(i);
            }
        }
        let inits = graph
            .initializer
            .iter()
            .map(|t| (t.name.as_str(), t))
            .collect();
        Context {
            graph,
            producer,
            consumers,
            inits,
        }
    }

    fn chain(&self, int_node: usize) -> Result<Chain, Unrecognised> {
        let n = &self.graph.node[int_node];
        let input = |k: usize| n.input.get(k).map(String::as_str).unwrap_or("");
        let (xq, wq_name, xzp, wzp_name) = (input(0), input(1), input(2), input(3));
        // x and its zero point must be outputs 0 and 2 of one DynamicQuantizeLinear.
        let dql = self
            .producer
            .get(xq)
            .copied()
            .filter(|&p| self.graph.node[p].op_type == "DynamicQuantizeLinear")
            .ok_or_else(|| Unrecognised::NotDynamic(xq.into()))?;
        let dq = &self.graph.node[dql];
        if dq.output.first().map(String::as_str) != Some(xq)
            || dq.output.get(2).map(String::as_str) != Some(xzp)
        {
            return Err(Unrecognised::NotDynamic(xzp.into()));
        }
        let (float_input, x_scale) = match (dq.input.first(), dq.output.get(1)) {
            (Some(i), Some(s)) => (i.clone(), s.as_str()),
            _ => return Err(Unrecognised::NotDynamic(xq.into())),
        };
        let wq = self.init(wq_name)?;
        let out = n.output.first().map(String::as_str).unwrap_or("");
        let (cast, mul) = self.tail(out)?;
        let m = &self.graph.node[mul];
        let scale_name = m
            .input
            .iter()
            .find(|i| i.as_str() != self.graph.node[cast].output[0])
            .map(String::as_str)
            .unwrap_or("");
        let w_scale = self.weight_scale(scale_name, x_scale)?;
        let w_zp = if wzp_name.is_empty() {
            0.0
        } else {
            scalar(&ints(self.init(wzp_name)?)?, wzp_name)?
        };
        let w_scale = scalar(&floats(self.init(w_scale)?)?, w_scale)?;
        let data: Vec<u8> = ints(wq)?
            .iter()
            .flat_map(|&q| ((q - w_zp) * w_scale).to_le_bytes())
            .collect();
        let weight = TensorProto {
            name: format!("{wq_name}_dequantized"),
            dims: wq.dims.clone(),
            data_type: DataType::Float as i32,
            raw_data: data,
            ..TensorProto::default()
        };
        let bias = if n.op_type == "ConvInteger" {
            self.conv_bias(mul, wq.dims.first().copied().unwrap_or(0))
        } else {
            None
        };
        Ok(Chain {
            int_node,
            cast,
            mul,
            float_input,
            weight,
            bias,
        })
    }

    /// `Add(y, Reshape(b, [1, M or -1, 1, 1]))` with `b` a constant `[M]` float vector: the exporter's
    /// bias. Folded into the Conv because tract 0.23.9 fails to optimise a float Conv followed by
    /// that Add (its ChangeAxes pass hands the Conv a `[M, 1]` bias). Anything else: `None`, the
    /// Add stays.
    fn conv_bias(&self, mul: usize, channels: i64) -> Option<(usize, String)> {
        let y = self.graph.node[mul].output.first()?;
        let add = match self.consumers.get(y.as_str()).map(Vec::as_slice) {
            Some(&[a]) => a,
            _ => return None,
        };
        let a = &self.graph.node[add];
        if a.op_type != "Add" || a.input.len() != 2 || a.output.len() != 1 {
            return None;
        }
        let other = a.input.iter().find(|i| *i != y)?;
        let r = &self.graph.node[*self.producer.get(other.as_str())?];
        if r.op_type != "Reshape" || r.input.len() != 2 {
            return None;
        }
        let b = self.inits.get(r.input[0].as_str())?;
        let shape = int64s(self.inits.get(r.input[1].as_str())?)?;
        let per_channel = b.dims == [channels]
            && b.data_type == DataType::Float as i32
            && shape.len() >= 2
            // -1: "the rest", which for a [M] vector is M.
            && (shape[1] == channels || shape[1] == -1)
            && shape.iter().enumerate().all(|(k, &d)| k == 1 || d == 1);
        per_channel.then(|| (add, b.name.clone()))
    }

    /// The Cast(to float) and Mul that alone consume the integer output.
    fn tail(&self, out: &str) -> Result<(usize, usize), Unrecognised> {
        let only = |name: &str| match self.consumers.get(name).map(Vec::as_slice) {
            Some(&[c]) => Some(c),
            _ => None,
        };
        let cast = only(out)
            .filter(|&c| {
                let c = &self.graph.node[c];
                c.op_type == "Cast"
                    && c.attribute
                        .iter()
                        .any(|a| a.name == "to" && a.i == DataType::Float as i64)
            })
            .ok_or_else(|| Unrecognised::Tail(out.into()))?;
        let cast_out = self.graph.node[cast].output.first().map(String::as_str);
        let mul = cast_out
            .and_then(only)
            .filter(|&m| {
                let m = &self.graph.node[m];
                m.op_type == "Mul" && m.input.len() == 2 && m.output.len() == 1
            })
            .ok_or_else(|| Unrecognised::Tail(out.into()))?;
        Ok((cast, mul))
    }

    /// `scale` must be Mul(x_scale, w_scale) with w_scale an initializer; returns its name.
    fn weight_scale(&self, scale: &str, x_scale: &str) -> Result<&'a str, Unrecognised> {
        let m = self
            .producer
            .get(scale)
            .map(|&p| &self.graph.node[p])
            .filter(|m| m.op_type == "Mul" && m.input.len() == 2)
            .ok_or_else(|| Unrecognised::Scale(scale.into()))?;
        match (m.input[0].as_str(), m.input[1].as_str()) {
            (a, w) | (w, a) if a == x_scale && self.inits.contains_key(w) => Ok(w),
            _ => Err(Unrecognised::Scale(scale.into())),
        }
    }

    fn init(&self, name: &str) -> Result<&'a TensorProto, Unrecognised> {
        self.inits
            .get(name)
            .copied()
            .ok_or_else(|| Unrecognised::NotConstant(name.into()))
    }
}

/// The single value of a scalar (or one-element) tensor; per-channel values are not handled.
fn scalar(values: &[f32], name: &str) -> Result<f32, Unrecognised> {
    match values {
        [v] => Ok(*v),
        _ => Err(Unrecognised::Tensor {
            name: name.into(),
            reason: "not a single value (per-channel quantisation is not rewritten)",
        }),
    }
}

fn external(t: &TensorProto) -> bool {
    t.data_location == Some(tract_onnx::pb::tensor_proto::DataLocation::External as i32)
}

/// An int8 or uint8 tensor's values (raw bytes, or the int32 field ONNX also allows).
fn ints(t: &TensorProto) -> Result<Vec<f32>, Unrecognised> {
    let err = |reason| Unrecognised::Tensor {
        name: t.name.clone(),
        reason,
    };
    if external(t) {
        return Err(err("stored in an external file"));
    }
    let signed = if t.data_type == DataType::Int8 as i32 {
        true
    } else if t.data_type == DataType::Uint8 as i32 {
        false
    } else {
        return Err(err("not int8 or uint8"));
    };
    let values: Vec<f32> = if t.raw_data.is_empty() {
        t.int32_data.iter().map(|&v| v as f32).collect()
    } else if signed {
        t.raw_data.iter().map(|&b| f32::from(b as i8)).collect()
    } else {
        t.raw_data.iter().map(|&b| f32::from(b)).collect()
    };
    check_len(t, values)
}

/// An inline int64 tensor's values (a Reshape's shape).
fn int64s(t: &TensorProto) -> Option<Vec<i64>> {
    if external(t) || t.data_type != DataType::Int64 as i32 {
        return None;
    }
    if t.raw_data.is_empty() {
        return Some(t.int64_data.clone());
    }
    t.raw_data
        .chunks(8)
        .map(|c| <[u8; 8]>::try_from(c).ok().map(i64::from_le_bytes))
        .collect()
}

/// A float tensor's values.
fn floats(t: &TensorProto) -> Result<Vec<f32>, Unrecognised> {
    if external(t) || t.data_type != DataType::Float as i32 {
        return Err(Unrecognised::Tensor {
            name: t.name.clone(),
            reason: "not an inline float tensor",
        });
    }
    let values = if t.raw_data.is_empty() {
        t.float_data.clone()
    } else {
        t.raw_data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    };
    check_len(t, values)
}

/// The element count must match the dims: a truncated tensor is not rewritten.
fn check_len(t: &TensorProto, values: Vec<f32>) -> Result<Vec<f32>, Unrecognised> {
    let expected: i64 = t.dims.iter().product();
    if usize::try_from(expected).ok() == Some(values.len()) {
        Ok(values)
    } else {
        Err(Unrecognised::Tensor {
            name: t.name.clone(),
            reason: "element count does not match its dims",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_onnx::pb::{AttributeProto, NodeProto};

    fn node(op: &str, inputs: &[&str], outputs: &[&str]) -> NodeProto {
        NodeProto {
            op_type: op.into(),
            name: outputs[0].into(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.iter().map(|s| s.to_string()).collect(),
            ..NodeProto::default()
        }
    }

    fn tensor(name: &str, dt: DataType, dims: &[i64], raw: Vec<u8>) -> TensorProto {
        TensorProto {
            name: name.into(),
            data_type: dt as i32,
            dims: dims.to_vec(),
            raw_data: raw,
            ..TensorProto::default()
        }
    }

    /// x -> DQL -> ConvInteger -> Cast -> Mul, as quantize_dynamic writes it.
    fn quantised(cast_to: DataType) -> GraphProto {
        let mut cast = node("Cast", &["yi"], &["yc"]);
        cast.attribute.push(AttributeProto {
            name: "to".into(),
            r#type: tract_onnx::pb::attribute_proto::AttributeType::Int as i32,
            i: cast_to as i64,
            ..AttributeProto::default()
        });
        GraphProto {
            node: vec![
                node("DynamicQuantizeLinear", &["x"], &["xq", "xs", "xzp"]),
                node("Mul", &["xs", "ws"], &["s"]),
                node("ConvInteger", &["xq", "wq", "xzp", "wzp"], &["yi"]),
                cast,
                node("Mul", &["yc", "s"], &["y"]),
            ],
            initializer: vec![
                tensor("wq", DataType::Uint8, &[1, 1, 1, 2], vec![10, 130]),
                tensor("wzp", DataType::Uint8, &[], vec![128]),
                tensor("ws", DataType::Float, &[], 0.5f32.to_le_bytes().to_vec()),
            ],
            output: vec![tract_onnx::pb::ValueInfoProto {
                name: "y".into(),
                ..Default::default()
            }],
            ..GraphProto::default()
        }
    }

    #[test]
    fn conv_integer_chain_becomes_float_conv() {
        let mut g = quantised(DataType::Float);
        assert_eq!(
            rewrite(&mut g),
            Summary {
                rewritten: 1,
                left: 0
            }
        );
        let ops: Vec<&str> = g.node.iter().map(|n| n.op_type.as_str()).collect();
        assert_eq!(ops, ["Conv"]);
        assert_eq!(g.node[0].input, ["x", "wq_dequantized"]);
        assert_eq!(g.node[0].output, ["y"]);
        let w = floats(&g.initializer[0]).expect("float weight");
        assert_eq!(w, [(10.0 - 128.0) * 0.5, (130.0 - 128.0) * 0.5]);
        assert_eq!(g.initializer.len(), 1, "the integer weights are dropped");
    }

    #[test]
    fn unrecognised_chain_is_left_as_is() {
        // A Cast to int64 is not the exporter's pattern: nothing may be guessed.
        let mut g = quantised(DataType::Int64);
        let before = g.clone();
        assert_eq!(
            rewrite(&mut g),
            Summary {
                rewritten: 0,
                left: 1
            }
        );
        assert_eq!(g, before);
    }

    /// quantize_dynamic's conv as it writes it (bias Add on a reshaped vector included), run by
    /// tract as exported and rewritten: same values within the activation quantisation step.
    #[test]
    fn rewritten_conv_computes_what_the_quantised_one_does() {
        use super::super::engine::{Input, InputType, ModelFile, OnnxModel, Quantized};
        use prost::Message;
        use tract_onnx::pb::{
            attribute_proto::AttributeType, tensor_proto, ModelProto, OperatorSetIdProto,
            TypeProto, ValueInfoProto,
        };

        let ints = |name: &str, v: &[i64]| AttributeProto {
            name: name.into(),
            r#type: AttributeType::Ints as i32,
            ints: v.to_vec(),
            ..AttributeProto::default()
        };
        let value = |name: &str, dims: &[i64]| {
            ValueInfoProto {
            name: name.into(),
            r#type: Some(TypeProto {
                value: Some(tract_onnx::pb::type_proto::Value::TensorType(
                    tract_onnx::pb::type_proto::Tensor {
                        elem_type: DataType::Float as i32,
                        shape: Some(tract_onnx::pb::TensorShapeProto {
                            dim: dims
                                .iter()
                                .map(|&d| tract_onnx::pb::tensor_shape_proto::Dimension {
                                    value: Some(
                                        tract_onnx::pb::tensor_shape_proto::dimension::Value::DimValue(d),
                                    ),
                                    ..Default::default()
                                })
                                .collect(),
                        }),
                    },
                )),
                ..TypeProto::default()
            }),
            ..ValueInfoProto::default()
        }
        };
        let mut g = quantised(DataType::Float);
        // 3 output channels, 2 input channels, 3x3 kernel padded to keep 5x5.
        let wq: Vec<u8> = (0..54u32).map(|i| ((i * 37 + 11) % 256) as u8).collect();
        g.initializer[0] = tensor("wq", DataType::Uint8, &[3, 2, 3, 3], wq);
        g.initializer[2] = tensor("ws", DataType::Float, &[], 0.01f32.to_le_bytes().to_vec());
        g.node[2].attribute = vec![
            ints("kernel_shape", &[3, 3]),
            ints("pads", &[1, 1, 1, 1]),
            ints("strides", &[1, 1]),
        ];
        g.node[4] = node("Mul", &["yc", "s"], &["scaled"]);
        g.node.push(node("Reshape", &["b", "bshape"], &["b4"]));
        g.node.push(node("Add", &["scaled", "b4"], &["y"]));
        let bias: Vec<u8> = [0.5f32, -1.0, 2.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        g.initializer.push(tensor("b", DataType::Float, &[3], bias));
        g.initializer.push(TensorProto {
            name: "bshape".into(),
            data_type: tensor_proto::DataType::Int64 as i32,
            dims: vec![4],
            int64_data: vec![1, -1, 1, 1],
            ..TensorProto::default()
        });
        g.input = vec![value("x", &[1, 2, 5, 5])];
        g.output = vec![value("y", &[1, 3, 5, 5])];
        let bytes = ModelProto {
            ir_version: 8,
            opset_import: vec![OperatorSetIdProto {
                domain: String::new(),
                version: 13,
            }],
            graph: Some(g),
            ..ModelProto::default()
        }
        .encode_to_vec();
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("quantised.onnx");
        std::fs::write(&path, bytes).expect("write");
        let x: Vec<f32> = (0..50)
            .map(|i| ((i * 17 % 50) as f32 / 25.0) - 1.0)
            .collect();
        let run = |q| {
            OnnxModel::load(
                &ModelFile::unchecked(&path),
                &[1, 2, 5, 5],
                InputType::F32,
                q,
            )
            .expect("loads")
            .run(Input::F32(&x))
            .expect("runs")
            .remove(0)
            .data
        };
        let (exported, rewritten) = (run(Quantized::AsExported), run(Quantized::Dequantize));
        assert_eq!(exported.len(), 75);
        assert!(exported.iter().any(|v| v.abs() > 1.0), "{exported:?}");
        // 18 products, each off by at most half an activation step (2/255/2) times |w| <= 1.28.
        for (a, b) in exported.iter().zip(&rewritten) {
            assert!((a - b).abs() < 0.1, "{a} vs {b}");
        }
    }
}
