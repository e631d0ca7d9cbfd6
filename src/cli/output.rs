//! Writing vectors and matrices to stdout.

use std::io::Write;

use anyhow::Result;

use crate::text;

pub fn l2_normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    v.iter_mut().for_each(|x| *x /= norm);
}

/// One `{"text": ..., "embedding": [...]}` per line, in input order.
pub fn write_jsonl(out: &mut impl Write, texts: &[String], vectors: &[Vec<f32>]) -> Result<()> {
    #[derive(serde::Serialize)]
    struct Row<'a> {
        text: &'a str,
        embedding: &'a [f32],
    }
    for (text, embedding) in texts.iter().zip(vectors) {
        serde_json::to_writer(&mut *out, &Row { text, embedding })?;
        out.write_all(b"\n")?;
    }
    Ok(())
}

/// A header `text,dim_0,...`, then one row per sentence (RFC 4180 quoting).
pub fn write_csv(out: &mut impl Write, texts: &[String], vectors: &[Vec<f32>]) -> Result<()> {
    let dim = vectors.first().map_or(0, Vec::len);
    let mut w = csv::Writer::from_writer(out);
    let mut header = vec!["text".to_string()];
    header.extend((0..dim).map(|i| format!("dim_{i}")));
    w.write_record(&header)?;
    for (t, v) in texts.iter().zip(vectors) {
        let mut row = vec![t.clone()];
        row.extend(v.iter().map(|x| x.to_string()));
        w.write_record(&row)?;
    }
    w.flush()?;
    Ok(())
}

/// The matrix as an aligned table: one row per sentence (index, clipped text, values).
pub fn write_matrix_table(
    out: &mut impl Write,
    sentences: &[String],
    m: &[Vec<f32>],
) -> Result<()> {
    const MAX_TEXT: usize = 40;
    let n = sentences.len();
    let idx_w = (n.saturating_sub(1)).to_string().len();
    let text_w = sentences
        .iter()
        .map(|s| text::width(&text::clip(s, MAX_TEXT)))
        .max()
        .unwrap_or(0)
        .max("sentence".len());
    let cell = 7; // "-0.1234"
    write!(out, "{:>idx_w$}  {}", "#", text::pad("sentence", text_w))?;
    for j in 0..n {
        write!(out, "  {j:>cell$}")?;
    }
    writeln!(out)?;
    for (i, s) in sentences.iter().enumerate() {
        write!(out, "{i:>idx_w$}  {}", text::pad(s, text_w))?;
        for v in &m[i] {
            write!(out, "  {v:>cell$.4}")?;
        }
        writeln!(out)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_aligned_with_wide_characters() {
        let s = vec!["机器学习".to_string(), "cat".to_string()];
        let m = vec![vec![1.0, 0.25], vec![0.25, 1.0]];
        let mut buf = Vec::new();
        write_matrix_table(&mut buf, &s, &m).unwrap();
        let text = String::from_utf8(buf).unwrap();
        assert_eq!(
            text,
            "#  sentence        0        1\n\
             0  机器学习   1.0000   0.2500\n\
             1  cat        0.2500   1.0000\n"
        );
    }

    #[test]
    fn csv_quotes_text() {
        let mut buf = Vec::new();
        write_csv(&mut buf, &["a, \"b\"".to_string()], &[vec![0.5, -1.0]]).unwrap();
        assert_eq!(
            String::from_utf8(buf).unwrap(),
            "text,dim_0,dim_1\n\"a, \"\"b\"\"\",0.5,-1\n"
        );
    }
}
