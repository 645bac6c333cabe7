"""Chat SFT data: the three JSONL formats, assistant-only loss over multi-turn chats, packing
of whole conversations, bad lines named ``file:line``, and THD boundaries."""

from __future__ import annotations

import json

import pytest
import torch

from nemo_exaone.data.jsonl import BadRecordError
from nemo_exaone.data.sft_datasets import (
    ChatSFTSamples,
    encode_conversation,
    parse_conversation,
    read_chat_jsonl,
)

CHAT = [{"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is 2 + 2?"},
        {"role": "assistant", "content": "4."},
        {"role": "user", "content": "And 3 + 3?"},
        {"role": "assistant", "content": "6."}]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from nemo_exaone.data.assets import build_tiny_tokenizer
    from nemo_exaone.data.tokenizer import load_tokenizer

    return load_tokenizer(build_tiny_tokenizer(tmp_path_factory.mktemp("tok"), 2048))


def _write(path, records) -> str:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n"
                            for r in records), encoding="utf-8")
    return str(path)


def test_three_formats_give_the_same_tokens_and_loss_mask(tmp_path, tokenizer):
    nemo = {"system": "Be brief.", "mask": "User", "type": "VALUE_TO_TEXT",
            "conversations": [{"from": "User", "value": "What is 2 + 2?", "label": None},
                              {"from": "Assistant", "value": "4."},
                              {"from": "User", "value": "And 3 + 3?"},
                              {"from": "Assistant", "value": "6."}]}
    path = _write(tmp_path / "chats.jsonl", [{"messages": CHAT}, nemo,
                                             {"prompt": CHAT[:4], "completion": CHAT[4:]}])
    messages, aligner, trl = read_chat_jsonl([path])
    assert aligner.messages == messages.messages and aligner.where == f"{path}:2"
    ids, mask = encode_conversation(tokenizer, messages)
    assert encode_conversation(tokenizer, aligner) == (ids, mask)
    # multi-turn: every assistant turn (content and its end of turn) is trained, nothing else
    assert tokenizer.decode([i for i, m in zip(ids, mask) if m]) == \
        "4.[|endofturn|]6.[|endofturn|]"
    # TRL prompt-completion: an assistant turn of the prompt is context, not a target
    trl_ids, trl_mask = encode_conversation(tokenizer, trl)
    assert trl_ids == ids
    assert tokenizer.decode([i for i, m in zip(trl_ids, trl_mask) if m]) == "6.[|endofturn|]"


@pytest.mark.parametrize(("line", "reason"), [
    ('{"messages": [{"role": "user", "content": "hi"}]}', "no assistant turn"),
    ('{"messages": [{"role": "bot", "content": "hi"}]}', "messages[0].role"),
    ('{"system": "", "mask": "Assistant", "conversations": [{"from": "User", "value": "a"}]}',
     "mask='Assistant'"),
    ('{"conversations": [{"from": "Robot", "value": "a"}]}', "conversations[0].from"),
    ('{"prompt": "hi", "completion": 3}', "'completion'"),
    ('{"text": "plain"}', "no conversation"),
    ('{"messages": [', "malformed JSON"),
])
def test_a_bad_line_is_named(tmp_path, line, reason):
    good = json.dumps({"messages": CHAT})
    path = _write(tmp_path / "bad.jsonl", [good, line])
    with pytest.raises(BadRecordError) as err:
        read_chat_jsonl([path])
    assert str(err.value).startswith(f"{path}:2: ") and reason in str(err.value)


def test_packs_hold_whole_conversations_with_loss_on_assistant_tokens_only(tokenizer):
    chats = [parse_conversation({"messages": [
        {"role": "user", "content": f"Question number {i}?" + " more" * (i % 5)},
        {"role": "assistant", "content": f"Answer {i}."},
        {"role": "user", "content": "Thanks."},
        {"role": "assistant", "content": "You are welcome" + "!" * i}]}, "mem", i)
        for i in range(12)]
    encoded = [encode_conversation(tokenizer, c) for c in chats]
    samples = ChatSFTSamples(chats, tokenizer, seq_length=160, seed=3)
    assert len(samples) < len(chats)  # several conversations to a pack
    seen = []
    for index in range(len(samples)):
        sample = samples[index]
        docs = sample["document_ids"]
        for doc in docs.unique().tolist():
            if doc < 0:
                continue
            seen.append(doc)
            at = (docs == doc).nonzero().reshape(-1)
            ids, mask = encoded[doc]
            # whole and contiguous (the last token of a full pack is only a label)
            assert at.tolist() == list(range(int(at[0]), int(at[0]) + len(at)))
            assert len(at) == len(ids) or (len(at) == len(ids) - 1 and int(at[-1]) == 159)
            assert sample["tokens"][at].tolist() == ids[:len(at)]
            assert sample["position_ids"][at].tolist() == list(range(len(at)))
            # a label is trained iff it is an assistant token of the same conversation
            # (the last token's label belongs to the next conversation or padding)
            want = torch.tensor((mask[1:] + [0])[:len(at)], dtype=torch.float32)
            assert torch.equal(sample["loss_mask"][at], want)
        assert sample["loss_mask"][docs < 0].sum() == 0
    assert sorted(seen) == list(range(12))
    assert samples[len(samples)]["tokens"].shape == (160,)  # a second epoch, reshuffled


def test_too_long_conversations_are_skipped_truncated_or_refused(tokenizer):
    long = parse_conversation({"messages": [{"role": "user", "content": "word " * 200},
                                            {"role": "assistant", "content": "ok"}]},
                              "chats.jsonl", 7)
    short = parse_conversation({"messages": CHAT}, "chats.jsonl", 8)
    skipped = ChatSFTSamples([long, short], tokenizer, seq_length=96)
    assert skipped.num_skipped == 1 and len(skipped) == 1
    cut = ChatSFTSamples([long], tokenizer, seq_length=96, too_long="truncate")
    assert cut.num_truncated == 1 and (cut[0]["document_ids"] == 0).all()
    with pytest.raises(ValueError, match="chats.jsonl:7: .* tokens > train.seq_length"):
        ChatSFTSamples([long], tokenizer, seq_length=96, too_long="error")


def test_thd_boundaries_follow_the_segments():
    from nemo_exaone.model.packed_attention import segment_attention_mask, thd_packed_seq_params

    segments = torch.tensor([[4, 4, 4, 9, 9, -1], [2, 2, 2, 2, 2, 2]])
    params = thd_packed_seq_params(segments)
    assert params.qkv_format == "thd"
    assert params.cu_seqlens_q.tolist() == [0, 3, 5, 6, 12] and params.max_seqlen_q == 6
    assert params.cu_seqlens_q.dtype == torch.int32
    allowed = ~segment_attention_mask(segments)[0, 0]
    assert allowed[4].tolist() == [False, False, False, True, True, False]
    assert allowed[5].tolist() == [False] * 5 + [True]  # padding sees only padding
