//! Every loss against `tests/fixtures/loss_reference.json` and `loss_reference2.json`
//! (sentence-transformers 6.2.0, copied from the shared fixtures): the value and the gradient with
//! respect to every input column.

mod common;

use candle_core::{DType, Device, Tensor, Var};
use common::*;
use sbert_tui::train::losses::*;
use serde_json::Value;

fn tensor(v: &Value) -> Tensor {
    let m = matrix(v);
    let (r, c) = (m.len(), m[0].len());
    Tensor::from_vec(
        m.into_iter().flatten().collect::<Vec<f32>>(),
        (r, c),
        &Device::Cpu,
    )
    .unwrap()
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn loss_for(f: &Value, inputs: &[Tensor]) -> Tensor {
    let name = f["loss"].as_str().unwrap();
    let labels = || labels_tensor(&floats(&f["labels"]), &Device::Cpu).unwrap();
    let (a, b) = (&inputs[0], inputs.get(1));
    let r = match name {
        "CosineSimilarityLoss" => cosine_loss(a, b.unwrap(), &labels()),
        "CoSENTLoss(scale=20)" => cosent_loss(a, b.unwrap(), &labels(), COSENT_SCALE),
        "AnglELoss(scale=20)" => angle_loss(a, b.unwrap(), &labels(), COSENT_SCALE),
        "MSELoss(teacher embeddings as labels)" => mse_loss(a, &tensor(&f["labels"])),
        "SoftmaxLoss(u,v,|u-v|; 3 labels)" => {
            let targets = labels().to_dtype(DType::U32).unwrap();
            let w = tensor(&f["classifier_weight"]);
            let bias = Tensor::new(floats(&f["classifier_bias"]), &Device::Cpu).unwrap();
            softmax_loss(a, b.unwrap(), &targets, &w, &bias)
        }
        "TripletLoss(euclidean, margin=5)" => triplet_loss(
            a,
            b.unwrap(),
            &inputs[2],
            TripletDistance::Euclidean,
            TRIPLET_MARGIN_EUCLIDEAN,
        ),
        "TripletLoss(cosine, margin=0.5)" => triplet_loss(
            a,
            b.unwrap(),
            &inputs[2],
            TripletDistance::Cosine,
            TRIPLET_MARGIN_COSINE,
        ),
        "MultipleNegativesRankingLoss(scale=20, cos_sim) pairs"
        | "MultipleNegativesRankingLoss(scale=20, cos_sim) with hard negatives" => {
            let docs: Vec<&Tensor> = inputs[1..].iter().collect();
            mnr_loss(a, &docs, MNR_SCALE)
        }
        "MultipleNegativesSymmetricRankingLoss(scale=20)" => {
            let docs: Vec<&Tensor> = inputs[1..].iter().collect();
            mnr_symmetric_loss(a, &docs, MNR_SCALE)
        }
        "ContrastiveLoss(cosine distance, margin=0.5)" => {
            contrastive_loss(a, b.unwrap(), &labels(), CONTRASTIVE_MARGIN)
        }
        "OnlineContrastiveLoss(cosine distance, margin=0.5)" => {
            online_contrastive_loss(a, b.unwrap(), &labels(), CONTRASTIVE_MARGIN)
        }
        "MatryoshkaLoss(CoSENTLoss(scale=20), dims [16, 8, 4], weights [1, 1, 1])" => {
            matryoshka_loss(inputs, &[16, 8, 4], &[1.0, 1.0, 1.0], |c| {
                cosent_loss(&c[0], &c[1], &labels(), COSENT_SCALE)
            })
        }
        "MatryoshkaLoss(MultipleNegativesRankingLoss(scale=20), dims [16, 8, 4], weights [1, 0.5, 0.25]) with hard negatives" => {
            matryoshka_loss(inputs, &[16, 8, 4], &[1.0, 0.5, 0.25], |c| {
                mnr_loss(&c[0], &[&c[1], &c[2]], MNR_SCALE)
            })
        }
        "MarginMSELoss (dot product; columns query, positive, negative; label = teacher margin)" => {
            margin_mse_loss(a, b.unwrap(), &inputs[2], &labels())
        }
        other => panic!("no loss for fixture {other}"),
    };
    r.unwrap()
}

#[test]
fn every_loss_matches_python_in_value_and_gradient() {
    check_fixtures("loss_reference.json", 12);
}

/// Matryoshka over CoSENT and over MNR with hard negatives, MarginMSE.
#[test]
fn matryoshka_and_margin_mse_match_python_in_value_and_gradient() {
    check_fixtures("loss_reference2.json", 3);
}

fn check_fixtures(file: &str, count: usize) {
    let r = json(file);
    let fixtures = r["fixtures"].as_array().unwrap();
    assert_eq!(fixtures.len(), count);
    for f in fixtures {
        let name = f["loss"].as_str().unwrap();
        let columns: Vec<&str> = f["columns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect();
        let vars: Vec<Var> = columns
            .iter()
            .map(|c| Var::from_tensor(&tensor(&f["inputs"][c])).unwrap())
            .collect();
        let inputs: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
        let loss = loss_for(f, &inputs);
        let value = loss.to_scalar::<f32>().unwrap() as f64;
        let want = f["value"].as_f64().unwrap();
        assert!(
            (value - want).abs() <= 1e-5 * want.abs().max(1e-3),
            "{name}: value {value} vs {want}"
        );
        let grads = loss.backward().unwrap();
        for (c, var) in columns.iter().zip(&vars) {
            let want = matrix(&f["grads"][c]);
            let got: Vec<Vec<f32>> = match grads.get(var.as_tensor()) {
                Some(g) => g.to_vec2().unwrap(),
                None => vec![vec![0.0; want[0].len()]; want.len()],
            };
            // The fixture stores gradients with 6 decimals: relative 1e-5, floored at that rounding.
            for (i, (gr, wr)) in got.iter().zip(&want).enumerate() {
                for (j, (g, w)) in gr.iter().zip(wr).enumerate() {
                    let tol = (1e-5 * w.abs()).max(1.5e-6);
                    assert!(
                        (g - w).abs() <= tol,
                        "{name}: d/d{c}[{i}][{j}] = {g} vs {w}"
                    );
                }
            }
        }
    }
}
