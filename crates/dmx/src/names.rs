//! What a tensor's name says about it: which part of a checkpoint it is (weights or an
//! optimizer state), which role it plays in the network, and which layer it belongs to.
//!
//! Names are matched on their dot-separated segments and the `_`-separated words within
//! them, case-insensitively, so the spellings of PyTorch state dicts (GPT-2, Llama, BERT,
//! T5, NeoX, ...) and of training checkpoints (`optim.exp_avg.*`, `optimizer.state.3.exp_avg`,
//! `*.exp_avg_sq`, `*.momentum_buffer`) are recognised alike.

use serde::Serialize;

/// Which part of a checkpoint a tensor holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Component {
    /// Model weights (and buffers): everything that is not optimizer state.
    Weights,
    /// Adam's first moment (`exp_avg`).
    ExpAvg,
    /// Adam's second moment (`exp_avg_sq`).
    ExpAvgSq,
    /// Any other optimizer state: momentum buffers, step counters, Adagrad sums, ...
    OtherState,
}

impl Component {
    /// The name used in JSON and tables (`"weights"`, `"exp_avg"`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Component::Weights => "weights",
            Component::ExpAvg => "exp_avg",
            Component::ExpAvgSq => "exp_avg_sq",
            Component::OtherState => "other_state",
        }
    }
}

impl std::fmt::Display for Component {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The role a tensor plays in the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Attention projections (query, key, value, output) and their biases.
    Attention,
    /// Feed-forward (MLP) layers, experts included.
    Mlp,
    /// Token, position and type embeddings.
    Embedding,
    /// Normalisation scales and biases (LayerNorm, RMSNorm).
    Norm,
    /// The output head (`lm_head`, `output.weight`, classifiers).
    Output,
    /// Anything else (poolers, convolutions, buffers of unknown purpose).
    Other,
}

impl Role {
    /// The name used in JSON and tables (`"attention"`, `"mlp"`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Attention => "attention",
            Role::Mlp => "mlp",
            Role::Embedding => "embedding",
            Role::Norm => "norm",
            Role::Output => "output",
            Role::Other => "other",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// First segments under which tensors are optimizer state.
const OPTIMIZER_ROOTS: &[&str] = &[
    "optim",
    "optimizer",
    "optimizer_state",
    "optimizer_states",
    "optim_state",
    "opt_state",
    "opt",
    "param_groups",
];

/// Segments naming a first moment.
const FIRST_MOMENT: &[&str] = &["exp_avg", "exp_avgs", "first_moment", "moment1"];
/// Segments naming a second moment.
const SECOND_MOMENT: &[&str] = &["exp_avg_sq", "exp_avg_sqs", "second_moment", "moment2"];
/// Segments naming other optimizer state.
const OTHER_STATE: &[&str] = &[
    "momentum_buffer",
    "max_exp_avg_sq",
    "max_exp_avg_sqs",
    "square_avg",
    "acc_delta",
    "exp_inf",
    "state_steps",
];

pub(crate) fn segments(name: &str) -> Vec<String> {
    name.split(['.', '/'])
        .filter(|s| !s.is_empty())
        .map(str::to_ascii_lowercase)
        .collect()
}

fn is_index(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// True when the name lives in an optimizer's state (`optim.*`, `optimizer.*`, `state.3.*`).
fn optimizer_namespace(segs: &[String]) -> bool {
    match segs {
        [first, ..] if OPTIMIZER_ROOTS.contains(&first.as_str()) => true,
        [first, second, ..] => first == "state" && is_index(second),
        _ => false,
    }
}

/// Which part of a checkpoint tensor `name` holds.
///
/// `optim.exp_avg.blocks.0.attn_qkv.weight`, `state.3.exp_avg`, `layer.weight.exp_avg` →
/// [`Component::ExpAvg`]; the same with `exp_avg_sq` → [`Component::ExpAvgSq`];
/// momentum buffers, step counters and anything else under an optimizer prefix →
/// [`Component::OtherState`]; everything else → [`Component::Weights`].
pub fn component(name: &str) -> Component {
    let segs = segments(name);
    if segs.iter().any(|s| SECOND_MOMENT.contains(&s.as_str())) {
        return Component::ExpAvgSq;
    }
    if segs.iter().any(|s| FIRST_MOMENT.contains(&s.as_str())) {
        return Component::ExpAvg;
    }
    if optimizer_namespace(&segs)
        || segs.iter().any(|s| OTHER_STATE.contains(&s.as_str()))
        || (segs.len() > 1 && segs.last().is_some_and(|s| s == "step"))
    {
        return Component::OtherState;
    }
    Component::Weights
}

fn words(seg: &str) -> impl Iterator<Item = &str> {
    seg.split(['_', '-']).filter(|w| !w.is_empty())
}

fn is_norm(seg: &str) -> bool {
    seg.contains("norm")
        || seg == "ln"
        || seg
            .strip_prefix("ln")
            .is_some_and(|rest| rest.starts_with('_') || rest.bytes().all(|b| b.is_ascii_digit()))
        || words(seg).any(|w| w == "rms" || w == "ln" || w == "rmsnorm")
}

fn is_output(seg: &str, at_root: bool, in_layer: bool) -> bool {
    matches!(
        seg,
        "lm_head" | "classifier" | "embed_out" | "qa_outputs" | "output_layer" | "score"
    ) || (at_root && !in_layer && matches!(seg, "output" | "head" | "cls" | "fc" | "logits"))
}

fn is_embedding(seg: &str) -> bool {
    matches!(
        seg,
        "wte" | "wpe" | "shared" | "position_ids" | "token_type_ids"
    ) || words(seg).any(|w| matches!(w, "embed" | "embeds" | "embedding" | "embeddings" | "embd"))
}

fn is_attention(seg: &str) -> bool {
    seg.contains("attn")
        || seg.contains("attention")
        || matches!(
            seg,
            "q_proj"
                | "k_proj"
                | "v_proj"
                | "o_proj"
                | "qkv_proj"
                | "out_proj"
                | "in_proj_weight"
                | "in_proj_bias"
                | "query"
                | "key"
                | "value"
                | "qkv"
                | "query_key_value"
                | "wq"
                | "wk"
                | "wv"
                | "wqkv"
                | "q_lin"
                | "k_lin"
                | "v_lin"
                | "out_lin"
                | "selfattention"
        )
}

fn is_mlp(seg: &str) -> bool {
    seg.contains("mlp")
        || seg.contains("ffn")
        || seg.contains("feed_forward")
        || seg.contains("feedforward")
        || seg.contains("densereludense")
        || seg.contains("densegatedactdense")
        || matches!(
            seg,
            "fc1"
                | "fc2"
                | "fc_in"
                | "fc_out"
                | "c_fc"
                | "gate_proj"
                | "up_proj"
                | "down_proj"
                | "gate_up_proj"
                | "intermediate"
                | "dense_h_to_4h"
                | "dense_4h_to_h"
                | "experts"
                | "w1"
                | "w2"
                | "w3"
                | "wi"
                | "wi_0"
                | "wi_1"
        )
}

/// The segments that describe the tensor itself: without an optimizer prefix such as
/// `optim.exp_avg.` or `state.3.` and without a trailing moment name.
fn model_segments(name: &str) -> Vec<String> {
    let mut segs = segments(name);
    if optimizer_namespace(&segs) {
        let skip = segs
            .iter()
            .position(|s| {
                !(OPTIMIZER_ROOTS.contains(&s.as_str())
                    || s == "state"
                    || is_index(s)
                    || FIRST_MOMENT.contains(&s.as_str())
                    || SECOND_MOMENT.contains(&s.as_str())
                    || OTHER_STATE.contains(&s.as_str()))
            })
            .unwrap_or(segs.len());
        segs.drain(..skip);
    }
    while segs.last().is_some_and(|s| {
        FIRST_MOMENT.contains(&s.as_str())
            || SECOND_MOMENT.contains(&s.as_str())
            || OTHER_STATE.contains(&s.as_str())
    }) {
        segs.pop();
    }
    // A common wrapper prefix says nothing about the role.
    while segs.len() > 1
        && matches!(
            segs[0].as_str(),
            "model" | "module" | "transformer" | "_orig_mod" | "base_model" | "bert" | "roberta"
        )
    {
        segs.remove(0);
    }
    segs
}

/// The role tensor `name` plays: attention, MLP, embedding, norm, output head or other.
///
/// Optimizer-state names (`optim.exp_avg.blocks.0.ln1.weight`) get the role of the weight
/// they belong to. Norms win over the block they sit in (`attention.output.LayerNorm` is a
/// norm); inside a numbered layer, BERT's `output.dense` is the MLP's second projection.
pub fn role(name: &str) -> Role {
    let segs = model_segments(name);
    let in_layer = layer(name).is_some();
    if segs.iter().any(|s| is_norm(s)) {
        return Role::Norm;
    }
    if segs
        .iter()
        .enumerate()
        .any(|(i, s)| is_output(s, i == 0, in_layer))
    {
        return Role::Output;
    }
    if segs.iter().any(|s| is_embedding(s)) {
        return Role::Embedding;
    }
    if segs.iter().any(|s| is_attention(s)) {
        return Role::Attention;
    }
    if segs.iter().any(|s| is_mlp(s)) || (in_layer && segs.iter().any(|s| s == "output")) {
        return Role::Mlp;
    }
    Role::Other
}

/// Where the layer index sits in a name: the index of the dot-separated segment and, within
/// it, the byte range of the digits.
fn layer_place(name: &str) -> Option<(usize, std::ops::Range<usize>, u32)> {
    let parts: Vec<&str> = name.split('.').collect();
    // A numeric segment, not the parameter index of an optimizer's `state.N`.
    for (i, p) in parts.iter().enumerate() {
        if is_index(p) {
            let prev = i.checked_sub(1).map(|j| parts[j].to_ascii_lowercase());
            if prev
                .as_deref()
                .is_some_and(|s| s == "state" || s == "param_groups")
            {
                continue;
            }
            if let Ok(n) = p.parse::<u32>() {
                return Some((i, 0..p.len(), n));
            }
        }
    }
    // A layer number glued to its container: `layer_3`, `layers3`, `block_3`, `h3`.
    for (i, p) in parts.iter().enumerate() {
        let lower = p.to_ascii_lowercase();
        let digits = lower.len() - lower.trim_end_matches(|c: char| c.is_ascii_digit()).len();
        if digits == 0 || digits == lower.len() {
            continue;
        }
        let stem = lower[..lower.len() - digits].trim_end_matches('_');
        if matches!(
            stem,
            "layer" | "layers" | "block" | "blocks" | "h" | "stage"
        ) && let Ok(n) = lower[lower.len() - digits..].parse::<u32>()
        {
            return Some((i, p.len() - digits..p.len(), n));
        }
    }
    None
}

/// The index of the layer tensor `name` belongs to (`model.layers.3.mlp.up_proj.weight` → 3),
/// for per-layer rollups; `None` for embeddings, heads and other unnumbered tensors. The
/// parameter index of optimizer state (`state.7.exp_avg`) is not a layer.
pub fn layer(name: &str) -> Option<u32> {
    layer_place(name).map(|(_, _, n)| n)
}

/// The name with its layer index replaced by `*` (`model.h.3.attn.c_attn.weight` →
/// `model.h.*.attn.c_attn.weight`): tensors whose names differ only in the layer share a key.
/// Names without a layer index are returned unchanged.
pub fn role_key(name: &str) -> String {
    let Some((seg, digits, _)) = layer_place(name) else {
        return name.to_string();
    };
    let mut parts: Vec<String> = name.split('.').map(str::to_string).collect();
    parts[seg].replace_range(digits, "*");
    parts.join(".")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components() {
        use Component::*;
        for (name, want) in [
            ("model.blocks.0.attn_qkv.weight", Weights),
            ("blocks.0.attn_qkv.weight", Weights),
            ("optim.exp_avg.blocks.0.attn_qkv.weight", ExpAvg),
            ("optim.exp_avg_sq.blocks.0.attn_qkv.weight", ExpAvgSq),
            ("optim.exp_avg.wte.weight", ExpAvg),
            ("optim.exp_avg_sq.ln_f.bias", ExpAvgSq),
            ("state.3.exp_avg", ExpAvg),
            ("state.3.exp_avg_sq", ExpAvgSq),
            ("optimizer.state.3.exp_avg_sq", ExpAvgSq),
            ("optimizer.state.12.exp_avg", ExpAvg),
            ("optimizer.state.3.step", OtherState),
            ("state.3.step", OtherState),
            ("state.3.momentum_buffer", OtherState),
            ("model.layers.0.mlp.weight.exp_avg", ExpAvg),
            ("model.layers.0.mlp.weight.exp_avg_sq", ExpAvgSq),
            ("model.layers.0.mlp.weight.momentum_buffer", OtherState),
            ("optimizer.state.0.max_exp_avg_sq", OtherState),
            ("optim.step", OtherState),
            ("optimizer.param_groups.0.lr", OtherState),
            ("embeddings.position_ids", Weights),
            ("encoder.layer.0.attention.self.state.weight", Weights),
            ("step", Weights),
            ("lm_head.weight", Weights),
            ("embedding.weight", Weights),
        ] {
            assert_eq!(component(name), want, "{name}");
        }
    }

    #[test]
    fn component_names() {
        assert_eq!(
            serde_json::to_string(&[
                Component::Weights,
                Component::ExpAvg,
                Component::ExpAvgSq,
                Component::OtherState
            ])
            .unwrap(),
            r#"["weights","exp_avg","exp_avg_sq","other_state"]"#
        );
        assert_eq!(
            serde_json::to_string(&[
                Role::Attention,
                Role::Mlp,
                Role::Embedding,
                Role::Norm,
                Role::Output,
                Role::Other
            ])
            .unwrap(),
            r#"["attention","mlp","embedding","norm","output","other"]"#
        );
        for c in [
            Component::Weights,
            Component::ExpAvg,
            Component::ExpAvgSq,
            Component::OtherState,
        ] {
            assert_eq!(serde_json::to_string(&c).unwrap(), format!("\"{c}\""));
        }
        assert_eq!(Role::Mlp.to_string(), "mlp");
    }

    #[test]
    fn roles() {
        use Role::*;
        for (name, want) in [
            // The corpus GPT (weights and AdamW state).
            ("blocks.0.attn_proj.bias", Attention),
            ("blocks.0.attn_proj.weight", Attention),
            ("blocks.3.attn_qkv.weight", Attention),
            ("blocks.0.ln1.bias", Norm),
            ("blocks.0.ln2.weight", Norm),
            ("blocks.0.mlp_fc.weight", Mlp),
            ("blocks.2.mlp_proj.bias", Mlp),
            ("lm_head.weight", Output),
            ("ln_f.bias", Norm),
            ("wpe.weight", Embedding),
            ("wte.weight", Embedding),
            ("model.blocks.1.attn_qkv.bias", Attention),
            ("model.lm_head.weight", Output),
            ("model.ln_f.weight", Norm),
            ("model.wte.weight", Embedding),
            ("optim.exp_avg.blocks.0.mlp_fc.weight", Mlp),
            ("optim.exp_avg_sq.blocks.0.ln1.weight", Norm),
            ("optim.exp_avg.lm_head.weight", Output),
            ("optim.exp_avg_sq.wpe.weight", Embedding),
            // GPT-2 (Hugging Face).
            ("transformer.h.0.attn.c_attn.weight", Attention),
            ("transformer.h.0.attn.c_proj.bias", Attention),
            ("transformer.h.0.attn.bias", Attention),
            ("transformer.h.0.mlp.c_fc.weight", Mlp),
            ("transformer.h.0.mlp.c_proj.weight", Mlp),
            ("transformer.h.11.ln_1.weight", Norm),
            ("transformer.h.11.ln_2.bias", Norm),
            ("transformer.ln_f.weight", Norm),
            ("transformer.wte.weight", Embedding),
            ("transformer.wpe.weight", Embedding),
            ("h.0.attn.c_attn.weight", Attention),
            // Llama (Hugging Face and original).
            ("model.embed_tokens.weight", Embedding),
            ("model.layers.0.self_attn.q_proj.weight", Attention),
            ("model.layers.0.self_attn.k_proj.weight", Attention),
            ("model.layers.0.self_attn.v_proj.weight", Attention),
            ("model.layers.0.self_attn.o_proj.weight", Attention),
            ("model.layers.0.self_attn.rotary_emb.inv_freq", Attention),
            ("model.layers.0.mlp.gate_proj.weight", Mlp),
            ("model.layers.0.mlp.up_proj.weight", Mlp),
            ("model.layers.0.mlp.down_proj.weight", Mlp),
            ("model.layers.0.input_layernorm.weight", Norm),
            ("model.layers.0.post_attention_layernorm.weight", Norm),
            ("model.layers.0.self_attn.q_norm.weight", Norm),
            ("model.norm.weight", Norm),
            ("lm_head.weight", Output),
            ("tok_embeddings.weight", Embedding),
            ("layers.0.attention.wq.weight", Attention),
            ("layers.0.attention.wo.weight", Attention),
            ("layers.0.feed_forward.w1.weight", Mlp),
            ("layers.0.feed_forward.w3.weight", Mlp),
            ("layers.0.attention_norm.weight", Norm),
            ("layers.0.ffn_norm.weight", Norm),
            ("norm.weight", Norm),
            ("output.weight", Output),
            ("model.layers.3.block_sparse_moe.experts.5.w2.weight", Mlp),
            // BERT / MiniLM (the corpus model).
            ("embeddings.position_ids", Embedding),
            ("embeddings.LayerNorm.bias", Norm),
            ("embeddings.LayerNorm.weight", Norm),
            ("embeddings.position_embeddings.weight", Embedding),
            ("embeddings.token_type_embeddings.weight", Embedding),
            ("embeddings.word_embeddings.weight", Embedding),
            ("encoder.layer.0.attention.output.LayerNorm.bias", Norm),
            ("encoder.layer.0.attention.output.dense.weight", Attention),
            ("encoder.layer.0.attention.self.key.bias", Attention),
            ("encoder.layer.0.attention.self.query.weight", Attention),
            ("encoder.layer.5.attention.self.value.weight", Attention),
            ("encoder.layer.0.intermediate.dense.weight", Mlp),
            ("encoder.layer.0.output.LayerNorm.weight", Norm),
            ("encoder.layer.0.output.dense.bias", Mlp),
            ("encoder.layer.5.output.dense.weight", Mlp),
            ("pooler.dense.weight", Other),
            ("bert.encoder.layer.0.output.dense.weight", Mlp),
            ("classifier.weight", Output),
            ("cls.predictions.transform.dense.weight", Output),
            ("qa_outputs.weight", Output),
            // The corpus WordLlama.
            ("embedding.weight", Embedding),
            // GPT-NeoX, Falcon, T5, DistilBERT, OPT.
            ("gpt_neox.embed_in.weight", Embedding),
            (
                "gpt_neox.layers.0.attention.query_key_value.weight",
                Attention,
            ),
            ("gpt_neox.layers.0.mlp.dense_h_to_4h.weight", Mlp),
            ("embed_out.weight", Output),
            ("transformer.h.0.self_attention.dense.weight", Attention),
            ("encoder.block.0.layer.0.SelfAttention.q.weight", Attention),
            ("encoder.block.0.layer.1.DenseReluDense.wi.weight", Mlp),
            ("encoder.block.0.layer.1.layer_norm.weight", Norm),
            ("shared.weight", Embedding),
            (
                "distilbert.transformer.layer.0.attention.q_lin.weight",
                Attention,
            ),
            ("distilbert.transformer.layer.0.ffn.lin1.weight", Mlp),
            ("distilbert.transformer.layer.0.sa_layer_norm.weight", Norm),
            ("model.decoder.layers.0.fc1.weight", Mlp),
            ("model.decoder.layers.0.self_attn_layer_norm.weight", Norm),
            ("model.decoder.embed_positions.weight", Embedding),
            // Other.
            ("conv1.weight", Other),
            ("step", Other),
        ] {
            assert_eq!(role(name), want, "{name}");
        }
    }

    #[test]
    fn layers_and_keys() {
        for (name, want, key) in [
            (
                "model.h.3.attn.c_attn.weight",
                Some(3),
                "model.h.*.attn.c_attn.weight",
            ),
            ("blocks.0.ln1.bias", Some(0), "blocks.*.ln1.bias"),
            (
                "optim.exp_avg_sq.blocks.12.mlp_fc.weight",
                Some(12),
                "optim.exp_avg_sq.blocks.*.mlp_fc.weight",
            ),
            (
                "encoder.layer.5.attention.self.query.weight",
                Some(5),
                "encoder.layer.*.attention.self.query.weight",
            ),
            (
                "model.layers.31.mlp.experts.7.w1.weight",
                Some(31),
                "model.layers.*.mlp.experts.7.w1.weight",
            ),
            ("state.3.exp_avg", None, "state.3.exp_avg"),
            (
                "optimizer.state.3.exp_avg_sq",
                None,
                "optimizer.state.3.exp_avg_sq",
            ),
            (
                "optimizer.state.3.layers.2.w.exp_avg",
                Some(2),
                "optimizer.state.3.layers.*.w.exp_avg",
            ),
            ("layer_4.dense.weight", Some(4), "layer_*.dense.weight"),
            ("h7.attn.weight", Some(7), "h*.attn.weight"),
            ("wte.weight", None, "wte.weight"),
            ("lm_head.weight", None, "lm_head.weight"),
            ("embeddings.position_ids", None, "embeddings.position_ids"),
            ("conv1.weight", None, "conv1.weight"),
            ("fc2.weight", None, "fc2.weight"),
            ("x.99999999999.y", None, "x.99999999999.y"),
        ] {
            assert_eq!(layer(name), want, "{name}");
            assert_eq!(role_key(name), key, "{name}");
        }
        assert_eq!(
            role_key("model.h.3.attn.c_attn.weight"),
            role_key("model.h.10.attn.c_attn.weight")
        );
    }
}
