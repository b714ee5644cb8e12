//! What a safetensors file is, from its tensor names alone (no tensor data is read).
//!
//! Recognised, in the order the rules are tried (the first that fits decides):
//!
//! | kind | tensor names that say so |
//! | --- | --- |
//! | LoRA / LyCORIS | `lora_up`/`lora_down`, `lora_A`/`lora_B`, `lora.up`/`lora.down`, LyCORIS `hada_w1_a`, `lokr_w1`, `oft_blocks`, `.diff_b`; kohya prefixes `lora_unet_`, `lora_te_` |
//! | embedding | only `emb_params`, `string_to_param.*`, or `clip_l`/`clip_g` (SDXL) |
//! | ControlNet | `control_model.`, `input_hint_block.`, `zero_convs.`, diffusers `controlnet_cond_embedding.`, `controlnet_down_blocks.` |
//! | checkpoint | `model.diffusion_model.` together with a VAE (`first_stage_model.`) or text encoder (`cond_stage_model.`, `conditioner.`, `text_encoders.`) |
//! | diffusion model | a UNet or DiT alone: `model.diffusion_model.`, `input_blocks.`/`middle_block.`/`output_blocks.`, diffusers `down_blocks.`/`up_blocks.`/`mid_block.`, Flux `double_blocks.`/`single_blocks.`, SD3 `joint_blocks.` |
//! | VAE | only `encoder.`/`decoder.`/`quant_conv`/`post_quant_conv` (optionally under `first_stage_model.` or `vae.`) |
//! | text encoder | CLIP `text_model.`, OpenCLIP `transformer.resblocks.`, T5 `encoder.block.` + `shared.`, or `cond_stage_model.` alone |
//! | upscaler | ESRGAN `conv_first.`/`RRDB_trunk.`/`body.N.rdb`, old-arch `model.0.`…`model.N.sub.`, SwinIR/HAT `conv_after_body.`/`residual_group` |
//!
//! The confidence is the share of tensors that carry the kind's marks: [`Confidence::High`] when
//! at least 90% do (real files score ~100%), [`Confidence::Medium`] from 50%, [`Confidence::Low`]
//! below that. Anything else is [`Kind::Unknown`] with [`Confidence::Low`]: unknown stays allowed.

/// What a model file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A full checkpoint: diffusion model plus VAE and/or text encoder.
    Checkpoint,
    /// A LoRA or LyCORIS adapter.
    Lora,
    /// A VAE.
    Vae,
    /// A ControlNet.
    ControlNet,
    /// A text encoder (CLIP, OpenCLIP, T5).
    TextEncoder,
    /// A textual-inversion embedding.
    Embedding,
    /// An image upscaler (ESRGAN, SwinIR, HAT, ...).
    Upscaler,
    /// A diffusion model alone (UNet or DiT, no VAE or text encoder).
    DiffusionModel,
    /// None of the above.
    Unknown,
}

impl Kind {
    /// The name used in records (`checkpoint`, `lora`, `vae`, `controlnet`, `text_encoder`,
    /// `embedding`, `upscaler`, `diffusion_model`, `unknown`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Checkpoint => "checkpoint",
            Self::Lora => "lora",
            Self::Vae => "vae",
            Self::ControlNet => "controlnet",
            Self::TextEncoder => "text_encoder",
            Self::Embedding => "embedding",
            Self::Upscaler => "upscaler",
            Self::DiffusionModel => "diffusion_model",
            Self::Unknown => "unknown",
        }
    }

    /// The kinds that belong in a model folder of the usual ComfyUI/A1111/Forge layout, by the
    /// folder's name (case-insensitive); `None` for a folder this crate has no opinion about.
    pub fn expected_in(folder: &str) -> Option<&'static [Kind]> {
        let f = folder.to_ascii_lowercase();
        Some(match f.as_str() {
            "checkpoints" | "stable-diffusion" => &[Kind::Checkpoint],
            "loras" | "lora" | "lycoris" => &[Kind::Lora],
            "vae" => &[Kind::Vae],
            "controlnet" => &[Kind::ControlNet],
            "clip" | "text_encoders" => &[Kind::TextEncoder],
            "embeddings" => &[Kind::Embedding],
            "upscale_models" | "esrgan" | "realesrgan" | "swinir" => &[Kind::Upscaler],
            "diffusion_models" | "unet" => &[Kind::DiffusionModel],
            _ => return None,
        })
    }
}

/// How sure a [`KindGuess`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Confidence {
    /// Fewer than half the tensors carry the kind's marks.
    Low,
    /// At least half do.
    Medium,
    /// At least 90% do.
    High,
}

/// A kind and how sure the classifier is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KindGuess {
    /// The kind.
    pub kind: Kind,
    /// How sure.
    pub confidence: Confidence,
}

impl KindGuess {
    /// Whether this guess says the file does not belong in `folder`: only a sure (medium or high)
    /// known kind that is not among the folder's expected kinds.
    pub fn mismatches(&self, folder: &str) -> bool {
        match Kind::expected_in(folder) {
            Some(kinds) => {
                self.kind != Kind::Unknown
                    && self.confidence >= Confidence::Medium
                    && !kinds.contains(&self.kind)
            }
            None => false,
        }
    }
}

// Marks are whole dot-separated segments of a lowercased name (or their prefixes), compared
// segment by segment: substring searches over thousands of names were most of a header check.

/// `lora_down`, `lora_a`, `lora` (diffusers' `lora.up`), kohya's `lora_unet_*`/`lora_te_*`,
/// LyCORIS `hada_*`, `lokr_*`, `oft_*`, and `alpha`, `diff_b`, `dora_scale`.
fn lora_segment(seg: &str) -> bool {
    seg == "lora"
        || ["lora_", "hada_", "lokr_", "oft_"]
            .iter()
            .any(|p| seg.starts_with(p))
        || matches!(seg, "alpha" | "diff_b" | "dora_scale")
}

/// ControlNet's own blocks (original and diffusers/Flux names).
fn controlnet_segment(seg: &str) -> bool {
    matches!(
        seg,
        "control_model" | "input_hint_block" | "zero_convs" | "middle_block_out"
    ) || seg.starts_with("controlnet_")
}

/// ESRGAN, Real-ESRGAN, SwinIR and HAT layer names.
fn upscaler_segment(seg: &str) -> bool {
    matches!(
        seg,
        "conv_first"
            | "rrdb_trunk"
            | "trunk_conv"
            | "upconv1"
            | "upconv2"
            | "hrconv"
            | "conv_last"
            | "conv_body"
            | "conv_up1"
            | "conv_up2"
            | "conv_hr"
            | "conv_after_body"
            | "residual_group"
            | "conv_before_upsample"
            | "upsample"
    )
}

fn any_segment(n: &str, pred: fn(&str) -> bool) -> bool {
    n.split('.').any(pred)
}

const UNET_PREFIXES: &[&str] = &[
    "model.diffusion_model.",
    "input_blocks.",
    "middle_block.",
    "output_blocks.",
    "time_embed.",
    "label_emb.",
    "out.",
    "down_blocks.",
    "up_blocks.",
    "mid_block.",
    "conv_in.",
    "conv_out.",
    "conv_norm_out.",
    "time_embedding.",
    "add_embedding.",
    "double_blocks.",
    "single_blocks.",
    "img_in.",
    "txt_in.",
    "time_in.",
    "vector_in.",
    "guidance_in.",
    "final_layer.",
    "joint_blocks.",
    "x_embedder.",
    "t_embedder.",
    "y_embedder.",
    "context_embedder.",
    "pos_embed",
    "transformer_blocks.",
    "single_transformer_blocks.",
    "norm_out.",
    "proj_out.",
    "time_text_embed.",
    "blocks.",
    "head.",
    "patch_embedding.",
    "text_embedding.",
    "time_projection.",
];
const VAE_PREFIXES: &[&str] = &["encoder.", "decoder.", "quant_conv.", "post_quant_conv."];
const TE_PREFIXES: &[&str] = &[
    "text_model.",
    "transformer.resblocks.",
    "transformer.text_model.",
    "encoder.block.",
    "encoder.final_layer_norm.",
    "shared.",
    "logit_scale",
    "text_projection",
    "token_embedding.",
    "positional_embedding",
    "ln_final.",
    "cond_stage_model.",
    "model.embed_tokens.",
    "model.layers.",
    "model.norm.",
    "embed_tokens.",
    "layers.",
    "norm.",
];
fn share(names: &[String], pred: impl Fn(&str) -> bool) -> f64 {
    if names.is_empty() {
        return 0.0;
    }
    names.iter().filter(|n| pred(n)).count() as f64 / names.len() as f64
}

fn confidence(share: f64) -> Confidence {
    if share >= 0.9 {
        Confidence::High
    } else if share >= 0.5 {
        Confidence::Medium
    } else {
        Confidence::Low
    }
}

fn any_prefix(n: &str, prefixes: &[&str]) -> bool {
    prefixes.iter().any(|p| n.starts_with(p))
}

fn strip<'a>(n: &'a str, prefixes: &[&str]) -> &'a str {
    prefixes.iter().find_map(|p| n.strip_prefix(p)).unwrap_or(n)
}

/// Classifies a file by its tensor names.
pub fn classify<'a>(names: impl IntoIterator<Item = &'a str>) -> KindGuess {
    // Lowercased once; markers below are lowercase.
    let names: Vec<String> = names.into_iter().map(str::to_ascii_lowercase).collect();
    let guess = |kind, s: f64| KindGuess {
        kind,
        confidence: confidence(s),
    };
    if names.is_empty() {
        return guess(Kind::Unknown, 0.0);
    }
    let lora = share(&names, |n| any_segment(n, lora_segment));
    if lora >= 0.5 {
        return guess(Kind::Lora, lora);
    }
    let emb = share(&names, |n| {
        n == "emb_params" || n.starts_with("string_to_param") || n == "clip_l" || n == "clip_g"
    });
    if emb == 1.0 && names.len() <= 4 {
        return guess(Kind::Embedding, emb);
    }
    let first_segment = |n: &str| n.split('.').next().is_some_and(controlnet_segment);
    if names.iter().any(|n| first_segment(n)) {
        // A ControlNet is a UNet copy plus its own blocks: its marks are on a minority of names.
        let cnet = share(&names, |n| {
            any_segment(n, controlnet_segment) || any_prefix(n, UNET_PREFIXES)
        });
        return guess(Kind::ControlNet, cnet);
    }
    let has = |p: &str| names.iter().any(|n| n.starts_with(p));
    let unet = has("model.diffusion_model.");
    let vae = has("first_stage_model.") || has("vae.");
    let te = has("cond_stage_model.") || has("conditioner.") || has("text_encoders.");
    if unet && (vae || te) {
        let s = share(&names, |n| {
            any_prefix(
                n,
                &[
                    "model.diffusion_model.",
                    "first_stage_model.",
                    "vae.",
                    "cond_stage_model.",
                    "conditioner.",
                    "text_encoders.",
                    "model_ema.",
                    "alphas_cumprod",
                    "betas",
                    "log_one_minus",
                    "posterior_",
                    "sqrt_",
                    "model.",
                ],
            )
        });
        return guess(Kind::Checkpoint, s);
    }
    let vae_share = share(&names, |n| {
        any_prefix(strip(n, &["first_stage_model.", "vae."]), VAE_PREFIXES)
    });
    // T5's encoder blocks also start with `encoder.`; a VAE has none.
    if vae_share >= 0.9 && has_decoder(&names) && !names.iter().any(|n| n.contains("encoder.block.")) {
        return guess(Kind::Vae, vae_share);
    }
    let ups = share(&names, |n| {
        any_segment(n, upscaler_segment)
            || n.starts_with("body.")
            || (n.starts_with("model.") && n.as_bytes().get(6).is_some_and(u8::is_ascii_digit))
    });
    if ups >= 0.5 {
        return guess(Kind::Upscaler, ups);
    }
    let te_share = share(&names, |n| {
        any_prefix(
            strip(n, &["text_encoder.", "te.", "clip_l.", "clip_g.", "t5xxl."]),
            TE_PREFIXES,
        )
    });
    let unet_share = share(&names, |n| any_prefix(n, UNET_PREFIXES));
    if te_share >= 0.5 && te_share >= unet_share {
        return guess(Kind::TextEncoder, te_share);
    }
    if unet_share >= 0.5 {
        return guess(Kind::DiffusionModel, unet_share);
    }
    guess(Kind::Unknown, 0.0)
}

fn has_decoder(names: &[String]) -> bool {
    names.iter().any(|n| n.contains("decoder."))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind_of(names: &[&str]) -> KindGuess {
        classify(names.iter().copied())
    }

    #[test]
    fn typical_files_are_recognised_with_high_confidence() {
        let cases: &[(&[&str], Kind)] = &[
            (
                &[
                    "lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight",
                    "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight",
                    "lora_unet_down_blocks_0_attentions_0_proj_in.alpha",
                ],
                Kind::Lora,
            ),
            (
                &[
                    "lycoris_x.hada_w1_a",
                    "lycoris_x.hada_w1_b",
                    "lycoris_x.hada_w2_a",
                    "lycoris_x.alpha",
                ],
                Kind::Lora,
            ),
            (&["emb_params"], Kind::Embedding),
            (&["clip_l", "clip_g"], Kind::Embedding),
            (
                &[
                    "model.diffusion_model.input_blocks.0.0.weight",
                    "first_stage_model.decoder.conv_in.weight",
                    "cond_stage_model.transformer.text_model.embeddings.position_ids",
                ],
                Kind::Checkpoint,
            ),
            (
                &[
                    "encoder.conv_in.weight",
                    "decoder.conv_in.weight",
                    "quant_conv.weight",
                    "post_quant_conv.bias",
                ],
                Kind::Vae,
            ),
            (
                &[
                    "control_model.input_blocks.0.0.weight",
                    "control_model.input_hint_block.0.weight",
                    "control_model.zero_convs.0.0.weight",
                ],
                Kind::ControlNet,
            ),
            (
                &[
                    "text_model.encoder.layers.0.mlp.fc1.weight",
                    "text_model.embeddings.token_embedding.weight",
                    "text_model.final_layer_norm.weight",
                ],
                Kind::TextEncoder,
            ),
            (
                &[
                    "conv_first.weight",
                    "RRDB_trunk.0.RDB1.conv1.weight",
                    "conv_last.weight",
                ],
                Kind::Upscaler,
            ),
            (
                &[
                    "model.0.weight",
                    "model.1.sub.0.RDB1.conv1.0.weight",
                    "model.3.weight",
                ],
                Kind::Upscaler,
            ),
            (
                &[
                    "double_blocks.0.img_attn.qkv.weight",
                    "single_blocks.0.linear1.weight",
                    "img_in.weight",
                ],
                Kind::DiffusionModel,
            ),
            (
                &[
                    "model.diffusion_model.input_blocks.0.0.weight",
                    "model.diffusion_model.out.2.weight",
                ],
                Kind::DiffusionModel,
            ),
        ];
        for (names, kind) in cases {
            let g = kind_of(names);
            assert_eq!(g.kind, *kind, "{names:?}");
            assert_eq!(g.confidence, Confidence::High, "{names:?}");
        }
    }

    #[test]
    fn strangers_are_unknown_and_never_mismatch() {
        let g = kind_of(&["foo", "bar.baz"]);
        assert_eq!(g.kind, Kind::Unknown);
        assert!(!g.mismatches("checkpoints"));
        assert_eq!(kind_of(&[]).kind, Kind::Unknown);
    }

    #[test]
    fn a_lora_in_checkpoints_mismatches_but_not_in_loras_or_an_unknown_folder() {
        let g = kind_of(&["lora_unet_x.lora_down.weight", "lora_unet_x.lora_up.weight"]);
        assert!(g.mismatches("checkpoints"));
        assert!(g.mismatches("Stable-diffusion"));
        assert!(!g.mismatches("loras"));
        assert!(!g.mismatches("my-stuff"));
    }
}
