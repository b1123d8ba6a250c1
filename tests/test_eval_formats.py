"""Benchmark loaders: every real annotation sample parses with the right counts; unsampled schemas; bad files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from longwatch.app.cli import main
from longwatch.eval.formats import BenchFormatError, detect_format, load_bench

SAMPLES = Path(__file__).parents[2] / "shared" / "benchmarks"
needs_samples = pytest.mark.skipif(not SAMPLES.is_dir(), reason=f"benchmark samples not present at {SAMPLES}")

SB_REAL_STREAM_TASKS = {"Action Recognition": 1, "Attribute Recognition": 8, "Clips Summarize": 5,
                        "Event Understanding": 2, "Object Recognition": 3, "Prospective Reasoning": 5,
                        "Spatial Understanding": 1}
OVO_MC = dict.fromkeys(["ACR", "ASI", "ATR", "EPM", "FPD", "HLD", "OCR", "OJR", "STU"], 3)

# file -> (format, videos, questions, questions per task); counted by hand from the files.
EXPECTED = {
    "hermes_ovobench_realtime_backward_rekvfmt_sample.json": ("rekv", 18, 18, {t: 2 for t in OVO_MC}),
    "hermes_streamingbench_realtime_rekvfmt_sample.json": ("rekv", 5, 25, SB_REAL_STREAM_TASKS),
    "longvideobench_lvb_val_sample.json": ("longvideobench", 5, 10, {"O2E": 2, "S2E": 2, "T2A": 2, "T2O": 2, "TOS": 2}),
    "mlvu_dev_1_plotQA_sample.json": ("mlvu", 3, 3, {"plotQA": 3}),
    "mlvu_dev_2_needle_sample.json": ("mlvu", 3, 3, {"findNeedle": 3}),
    "mlvu_dev_3_ego_sample.json": ("mlvu", 3, 3, {"ego": 3}),
    "mlvu_dev_4_count_sample.json": ("mlvu", 3, 3, {"count": 3}),
    "mlvu_dev_5_order_sample.json": ("mlvu", 3, 3, {"order": 3}),
    "mlvu_dev_6_anomaly_reco_sample.json": ("mlvu", 3, 3, {"anomaly_reco": 3}),
    "mlvu_dev_7_topic_reasoning_sample.json": ("mlvu", 3, 3, {"topic_reasoning": 3}),
    "mlvu_dev_8_sub_scene_sample.json": ("mlvu", 3, 3, {"subPlot": 3}),
    "mlvu_dev_9_summary_sample.json": ("mlvu", 3, 3, {"summary": 3}),
    # 27 multiple-choice records, then CRR 3 x 5 probes, SSR 12 + 17 + 23 probes, REC 3 + 4 + 2 probes
    "ovobench_sample.json": ("ovobench", 18, 103, {**OVO_MC, "CRR": 15, "SSR": 52, "REC": 9}),
    "rekv_activitynet_qa_sample.json": ("rekv", 5, 50, {"color": 4, "location": 2, "motion": 5, "number": 5,
                                                        "object": 2, "other": 8, "spatial": 5, "temporal": 5,
                                                        "yes_no": 14}),
    "rekv_mlvu_sample.json": ("rekv", 5, 10, {"anomaly_reco": 1, "findNeedle": 3, "plotQA": 4, "topic_reasoning": 2}),
    "rekv_qaego4d_sample.json": ("rekv", 5, 30, {"qaego4d": 30}),
    "rekv_rvs_ego_sample.json": ("rekv", 5, 846, {"rvs_ego": 846}),
    "rekv_rvs_movie_sample.json": ("rekv", 5, 398, {"rvs_movie": 398}),
    "streamingbench_omni_sample.json": ("streamingbench", 1, 5, {"Misleading Context Understanding": 5}),
    "streamingbench_omni_stream_sample.json": ("streamingbench", 5, 25, {
        "Anomaly Context Understanding": 5, "Emotion Recognition": 5, "Misleading Context Understanding": 10,
        "Source Discrimination": 5}),
    "streamingbench_proactive_50_sample.json": ("streamingbench", 5, 5, {"Proactive Output": 5}),
    "streamingbench_proactive_sample.json": ("streamingbench", 1, 5, {"Proactive Output": 5}),
    "streamingbench_real_sample.json": ("streamingbench", 1, 5, {"Clips Summarize": 5}),
    "streamingbench_real_stream_sample.json": ("streamingbench", 5, 25, SB_REAL_STREAM_TASKS),
    "streamingbench_sqa_sample.json": ("streamingbench", 5, 25, {"Sequential Question Answering": 25}),
    "streamingbench_sqa_stream_sample.json": ("streamingbench", 5, 25, {"Sequential Question Answering": 25}),
}


@needs_samples
def test_every_sample_file_is_covered():
    on_disk = {p.name for p in SAMPLES.glob("*.json")} - {"video_durations.json"}
    assert on_disk == set(EXPECTED)


@needs_samples
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_sample_counts(name):
    fmt, videos, questions, tasks = EXPECTED[name]
    bench = load_bench(SAMPLES / name)
    assert (bench.format, len(bench.videos), len(bench.questions)) == (fmt, videos, questions)
    assert bench.counts_by_task() == tasks
    for q in bench.questions:  # multiple choice gold always points at one of the choices
        if q.kind == "mc":
            assert q.choices[q.answer_index] == q.answer


@needs_samples
def test_dry_run_over_the_whole_folder(capsys):
    assert main(["eval", "--bench", str(SAMPLES), "--dry-run", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (len(out["files"]), out["videos"], out["questions"]) == (26, 126, 1637)
    assert main(["eval", "--bench", str(SAMPLES / "ovobench_sample.json"), "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert "ovobench, 18 videos, 103 questions, 36 records" in text and "SSR  52" in text


@needs_samples
def test_durations_table_is_named_not_a_benchmark(capsys):
    assert main(["eval", "--bench", str(SAMPLES / "video_durations.json"), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "video_durations.json" in err and "not a benchmark" in err


@needs_samples
def test_ovobench_forward_probes_and_tracks():
    bench = load_bench(SAMPLES / "ovobench_sample.json")
    crr = [q for q in bench.questions if q.extra.get("parent") == "1468"]
    assert [(q.ask_time_s, q.answer) for q in crr] == [(297, "No"), (302, "No"), (310, "Yes"), (318, "Yes"), (338, "Yes")]
    rec = [q for q in bench.questions if q.extra.get("parent") == "1558"]
    assert [(q.kind, q.ask_time_s, q.answer) for q in rec] == [("count", 17, "1"), ("count", 19, "1"), ("count", 32, "1")]
    assert rec[0].evidence_windows == ((6.0, 17.0),)
    epm = next(q for q in bench.questions if q.task == "EPM")
    assert (epm.ask_time_s, epm.answer_letter, epm.answer) == (215, "C", "a person with blue shirt")
    assert {q.extra["track"] for q in bench.questions if q.task == "SSR"} == {"forward"}


@needs_samples
def test_streamingbench_times_letters_and_proactive():
    real = load_bench(SAMPLES / "streamingbench_real_stream_sample.json")
    q = real.videos[0].questions[0]
    assert (q.ask_time_s, q.answer_letter, q.answer, q.choices[0]) == (6.0, "B", "A map.", "A compass.")
    sqa = load_bench(SAMPLES / "streamingbench_sqa_sample.json").videos[0].questions
    assert sqa[0].choices == ("Wang chuqin.", "Fan Z.D.", "Xu xin.", "Ma Lin.") and sqa[0].extra["sequential"]
    assert [q.ask_time_s for q in sqa] == sorted(q.ask_time_s for q in sqa)
    pro = load_bench(SAMPLES / "streamingbench_proactive_sample.json").questions[0]
    assert (pro.kind, pro.ask_time_s, pro.extra["gt_time_s"], pro.answer) == ("proactive", 20.0, 29.0, "3")


@needs_samples
def test_rekv_streaming_grounding_and_offline():
    ego = load_bench(SAMPLES / "rekv_rvs_ego_sample.json").questions[0]
    assert (ego.kind, ego.ask_time_s, ego.evidence_windows) == ("open", 300.0, ((0.0, 300.0),))
    movie = load_bench(SAMPLES / "rekv_rvs_movie_sample.json").questions[0]
    assert movie.video_path.endswith(".npy") and movie.extra["clip_start_time"] == 387
    ego4d = load_bench(SAMPLES / "rekv_qaego4d_sample.json")
    assert ego4d.offline and ego4d.questions[0].evidence_windows == ((4.0, 6.0),)
    assert ego4d.videos[0].duration_s == pytest.approx(1199.97, abs=0.01)
    lvb = load_bench(SAMPLES / "longvideobench_lvb_val_sample.json")
    assert lvb.offline and lvb.questions[0].answer_letter == "B" and lvb.questions[0].ask_time_s is None
    mlvu = load_bench(SAMPLES / "mlvu_dev_4_count_sample.json").questions[0]
    assert (mlvu.video_path, mlvu.answer) == ("4_count/count_126.mp4", "1")


def _write(tmp_path: Path, name: str, data) -> Path:
    p = tmp_path / name
    p.write_text(data if isinstance(data, str) else json.dumps(data))
    return p


def test_vnbench_annotations_and_result_lines(tmp_path):
    ann = [{"video": "VNBench/v_x_cnt_edit1.mp4", "question": "How many?", "options": ["1", "2", "3", "4"],
            "gt": "3", "type": "cnt_edit1", "try": k} for k in range(4)]
    bench = load_bench(_write(tmp_path, "vn.json", ann))
    assert (bench.format, len(bench.questions), bench.questions[0].answer_letter) == ("vnbench", 4, "C")
    prompt = ("<|im_start|>user\n<image>\nWhat is the order?\nA. cow, sheep\nB. sheep, cow\n"
              "Answer with the option's letter from the given choices directly.<|im_end|>\n")
    lines = "\n".join(json.dumps({"video_path": "./VNBench/v_y_ord_insert2.mp4", "prompt": prompt, "pred": "A",
                                  "gt": "B", "task_type": "ord_insert2", "try": k}) for k in range(2))
    res = load_bench(_write(tmp_path, "vn.jsonl", lines))
    q = res.questions[0]
    assert (q.question, q.choices, q.answer, q.extra["circular_group"]) == (
        "What is the order?", ("cow, sheep", "sheep, cow"), "sheep, cow", "v_y_ord_insert2|ord_insert2")


def test_videomme_egoschema_cgbench_schemas(tmp_path):
    tmpl = [{"video_id": "001", "duration": "short", "domain": "d", "sub_category": "s", "questions": [
        {"question_id": "001-1", "task_type": "Counting Problem", "question": "How many?",
         "options": ["A. 1", "B. 2", "C. 3", "D. 4"], "answer": "C", "response": ""}]}]
    b = load_bench(_write(tmp_path, "vmme.json", tmpl))
    assert (b.format, b.offline, b.questions[0].answer, b.questions[0].choices[0]) == ("videomme", True, "3", "1")
    flat = [{"videoID": "v1", "duration": "long", "domain": "d", "sub_category": "s", "question_id": "1",
             "task_type": "OCR Problems", "question": "What?", "options": ["A. x", "B. y"], "answer": "B"}]
    assert load_bench(_write(tmp_path, "vmme_flat.json", flat)).questions[0].answer == "y"
    ego = [{"video_idx": "abc", "question": "Why?", "option": ["a", "b", "c", "d", "e"], "answer": 4}]
    eb = load_bench(_write(tmp_path, "ego.json", ego))
    assert (eb.format, eb.questions[0].answer_letter, eb.videos[0].duration_s) == ("egoschema", "E", 180.0)
    cg = [{"video_uid": "u1", "qid": 7, "question": "Q?", "choices": ["p", "q", "r", "s"], "right_answer": "D",
           "duration": 900.0, "domain": "x", "sub_category": "y", "clue_intervals": [[10, 20]]}]
    cb = load_bench(_write(tmp_path, "cg.json", cg))
    assert (cb.format, cb.questions[0].answer, cb.questions[0].evidence_windows) == ("cgbench", "s", ((10.0, 20.0),))


def test_format_flag_overrides_detection(tmp_path):
    data = [{"video_id": "v", "video_path": "v.mp4", "conversations": [{"question": "q", "answer": "a"}]}]
    p = _write(tmp_path, "x.json", data)
    assert load_bench(p).format == "rekv"
    with pytest.raises(BenchFormatError, match=r"x\.json: cannot read as ovobench"):
        load_bench(p, "ovobench")


@pytest.mark.parametrize("content, message", [
    ("{not json", "not valid JSON"),
    ([{"foo": 1, "bar": 2}], r"unknown format: first record has keys \['bar', 'foo'\]"),
    ([{"video_id": "v", "video_path": "v.mp4", "conversations": [
        {"question": "q", "choices": ["a", "b"], "answer": "zzz"}]}], r"conversation 0: answer 'zzz' is not one of"),
    ([{"id": 1, "task": "EPM", "video": "x.mp4", "question": "q", "options": ["a"], "gt": 0}],
     r"record 0 \(id 1\): missing 'realtime'"),
    ([], "non-empty list"),
])
def test_bad_files_name_the_file_and_the_problem(tmp_path, capsys, content, message):
    p = _write(tmp_path, "bad.json", content)
    with pytest.raises(BenchFormatError, match=message) as e:
        load_bench(p)
    assert str(p) in str(e.value)
    assert main(["eval", "--bench", str(p), "--dry-run"]) == 2
    assert "bad.json" in capsys.readouterr().err


def test_detect_format_reports_what_it_saw():
    with pytest.raises(ValueError, match="top level is an object"):
        detect_format({"a": 1})
