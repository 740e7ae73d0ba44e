"""Hub backbones: text encoders with WordPiece, byte-level BPE and unigram tokenizers (BERT, RoBERTa,
DeBERTa-v2), their entity markers and word boundaries; the vision families' configuration (levels, image and crop
sizes, refusals), their levels (the backbone's own hidden states) and crop tokens, the level's [CLS] of encoders
without one, DINOv2's interpolated positions, and the pipeline with each vision family."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest
import torch
from hub_encoders import mnre_posts, save_text_encoder
from mnre_folder import write_mnre_folder
from PIL import Image
from tiny_models import LABELS, PREFIX_TOKENS, VISION_KINDS, tiny_config, tiny_inputs, tiny_vision_config
from transformers import (
    BartConfig,
    BertModel,
    BertTokenizerFast,
    DebertaV2Model,
    Dinov2Model,
    RobertaModel,
    SiglipVisionModel,
    SwinConfig,
    SwinModel,
    ViTImageProcessorPil,
)
from transformers.models.clip.modeling_clip import CLIPEncoderLayer

import run_mre
from analysis.tokens import VisualTokenLayout
from modeling_hvformer import HVFormerConfig, HVFormerForRelationExtraction
from modeling_hvformer.pipeline_hvformer import HVFormerRelationExtractionPipeline
from modeling_hvformer.vision_families import VISION_FAMILIES
from processing.entity_marking import ENTITY_MARKERS, FALLBACK_ENTITY_MARKERS, layout, split_at_bounds
from processing.processing_hvformer import HVFormerProcessor

TEXT_KINDS = ("bert", "roberta", "deberta_v2")


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict:
    """An MNRE-shaped folder, a tiny text encoder of each kind trained on its posts, and a 32-px image processor."""
    root = tmp_path_factory.mktemp("backbones")
    data = write_mnre_folder(root / "mnre", sizes={"train": 16, "val": 4, "test": 4})
    folders = {kind: save_text_encoder(kind, root / kind, data) for kind in TEXT_KINDS}
    ViTImageProcessorPil(size={"height": 32, "width": 32}).save_pretrained(root / "vision")
    return {**folders, "vision": root / "vision", "data": data}


def processor_of(folders: dict, kind: str, **kwargs) -> HVFormerProcessor:
    return HVFormerProcessor.from_text_vision_pretrained(
        str(folders[kind]), str(folders["vision"]), num_object_crops=2, object_image_size=16, **kwargs
    )


# Text encoders: markers and word boundaries


BOUNDARY_POSTS = [
    ("RT @vane : Corra Vane with the photo at Harbor Square today !", ("Corra Vane", "Harbor Square")),
    ("Harbor Square (Corra Vane).", ("Corra Vane", "Harbor Square")),
    ("Corra Vane and Tamsin Holt", ("Corra Vane", "Tamsin Holt")),
    ("#weekend  via Olek Marrow  and   Bryn Quill", ("Bryn Quill", "Olek Marrow")),
    ("great night at Kestrel Bay", ("Kestrel Bay", "Kestrel")),  # nested: <s> <o> Kestrel </o> Bay </s>
]


def between(ids: list[int], opening: int, closing: int) -> list[int]:
    return ids[ids.index(opening) + 1 : ids.index(closing)]


@pytest.mark.parametrize("kind", TEXT_KINDS)
def test_markers_keep_the_word_pieces_of_the_unmarked_text(folders, kind):
    """For WordPiece, byte-level BPE (`Ġ` word starts) and unigram (`▁` word starts) tokenizers, the encoding with
    the markers is the unmarked text's encoding with the four markers inserted: no piece added, lost or changed at a
    marker, and the pieces between each pair of markers spell the entity. Strings (spaces, punctuation, runs of
    spaces, nested entities) and MNRE word lists alike."""
    processor = processor_of(folders, kind)
    tokenizer = processor.tokenizer
    marker_ids = processor.marker_token_ids()
    word_posts = [
        (post.split(" "), ((0, 2), (3, 5))) for post in mnre_posts(folders["data"])[:12] if len(post.split(" ")) > 5
    ]
    cases = [({"text": text, "entities": entities}, text, entities) for text, entities in BOUNDARY_POSTS]
    cases += [
        (
            {"text": words, "entity_spans": spans, "is_split_into_words": True},
            " ".join(words),
            tuple(" ".join(words[start:end]) for start, end in spans),
        )
        for words, spans in word_posts
    ]
    for kwargs, text, (subject, obj) in cases:
        ids = processor(**kwargs, return_tensors=None)["input_ids"][0]
        unmarked = tokenizer(text)["input_ids"]
        assert [i for i in ids if i not in marker_ids] == unmarked, (kind, text)
        for (opening, closing), entity in zip(((0, 1), (2, 3)), (subject, obj), strict=True):
            inside = [i for i in between(ids, marker_ids[opening], marker_ids[closing]) if i not in marker_ids]
            spelled = "".join(tokenizer.decode(inside).split())  # WordPiece decodes "@ashby" as "@ ashby"
            assert spelled == "".join((entity.lower() if kind == "bert" else entity).split()), (kind, text)


def test_word_starts_of_byte_level_bpe_and_unigram_pieces(folders):
    """RoBERTa's first word has no `Ġ`, every later word has one, also right after a marker; DeBERTa-v2's pieces
    after a marker start with `▁` as in the unmarked text. Word lists read as the words joined by spaces (RoBERTa's
    tokenizer, saved without `add_prefix_space`, would glue pre-split words together)."""
    for kind, word_start, first_word_starts in (("roberta", "Ġ", False), ("deberta_v2", "▁", True)):
        processor = processor_of(folders, kind)
        tokens = processor.tokenizer.convert_ids_to_tokens
        marker_ids = processor.marker_token_ids()
        for kwargs in (
            {"text": "Corra Vane and Tamsin Holt", "entities": ("Corra Vane", "Tamsin Holt")},
            {"text": ["Corra", "Vane", "and", "Tamsin", "Holt"], "entity_spans": [(0, 2), (3, 5)]},
        ):
            ids = processor(**kwargs, is_split_into_words="entity_spans" in kwargs, return_tensors=None)
            ids = ids["input_ids"][0]
            subject = tokens(between(ids, marker_ids[0], marker_ids[1]))
            obj = tokens(between(ids, marker_ids[2], marker_ids[3]))
            starts = [[piece.startswith(word_start) for piece in pieces] for pieces in (subject, obj)]
            # "Corra" opens the text: a word start for SentencePiece only; "Vane", "Tamsin", "Holt" follow spaces.
            assert starts[0][0] == first_word_starts and sum(starts[0]) == 1 + first_word_starts, (kind, subject)
            assert starts[1][0] and sum(starts[1]) == 2, (kind, obj)


def test_a_marker_inside_a_word_piece_tokenizes_the_two_sides_apart():
    """When an entity boundary falls inside a piece of the unmarked text, the text is not shared out by offsets
    (`None`); otherwise every piece goes to the segment of its first non-space character (a piece of spaces only
    to the next word's)."""
    text = "ab cd."
    bounds, _, _ = layout((0, 2), (3, 5))  # "ab", "cd"
    pieces = split_at_bounds(text, [7, 8, 9], [(0, 2), (2, 5), (5, 6)], [0, 1, 2], bounds)
    assert pieces == [[], [[7]], [], [[8]], [[9]]]
    # The space piece (5) goes with the word after it; the pieces of one word in one segment stay one word.
    pieces = split_at_bounds(text, [7, 5, 8], [(0, 2), (2, 3), (3, 5)], [0, 1, 1], bounds)
    assert pieces == [[], [[7]], [], [[5, 8]], []]
    assert split_at_bounds(text, [7, 8], [(0, 4), (4, 6)], [0, 1], bounds) is None  # "ab c" straddles the object
    assert split_at_bounds(text, [7, 8], [(0, 2), (3, 6)], [0, 1], bounds) is None  # "cd." straddles its end


def test_roberta_gets_markers_it_does_not_own_saved_and_reloaded(folders, tmp_path):
    """RoBERTa's `<s>` and `</s>` are its own [CLS] and [SEP]: the processor takes `FALLBACK_ENTITY_MARKERS` with no
    flag, saves them, and a reloaded processor and the model built with it agree; markers asked for explicitly
    are used, and a clashing one is refused."""
    processor = processor_of(folders, "roberta")
    assert processor.entity_markers == list(FALLBACK_ENTITY_MARKERS)
    assert processor.tokenizer.cls_token == "<s>" and "token_type_ids" not in processor(
        text="a b", entities=("a", "b")
    )
    processor.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "processor_config.json").read_text())
    assert saved["entity_markers"] == list(FALLBACK_ENTITY_MARKERS)
    reloaded = HVFormerProcessor.from_pretrained(tmp_path)
    assert reloaded.entity_markers == processor.entity_markers
    assert reloaded.marker_token_ids() == processor.marker_token_ids()
    own = processor_of(folders, "roberta", entity_markers=["[E1]", "[/E1]", "[E2]", "[/E2]"])
    ids = own(text="Corra Vane and Tamsin Holt", entities=("Corra Vane", "Tamsin Holt"))["input_ids"][0]
    assert own.tokenizer.convert_ids_to_tokens(ids.tolist())[:4] == ["<s>", "[E1]", "Corra", "ĠVane"]
    with pytest.raises(ValueError, match="The entity marker '<s>' is already the tokenizer's cls_token"):
        processor_of(folders, "roberta", entity_markers=list(ENTITY_MARKERS))
    assert processor_of(folders, "deberta_v2").entity_markers == list(ENTITY_MARKERS)


@pytest.mark.parametrize("kind", ["roberta", "deberta_v2"])
def test_from_text_vision_pretrained_with_roberta_and_deberta(folders, tmp_path, kind):
    """The pretrained text weights are copied, the embeddings grow by the four markers, the markers' ids reach the
    config, and the model reads the processor's encoding (RoBERTa: no token types; DeBERTa-v2: zero token types,
    which its encoder without type embeddings ignores)."""
    torch.manual_seed(0)
    vision = tiny_vision_config("dinov2")
    Dinov2Model(vision).save_pretrained(tmp_path / "dinov2")
    processor = processor_of(folders, kind)
    model = HVFormerForRelationExtraction.from_text_vision_pretrained(
        str(folders[kind]),
        str(tmp_path / "dinov2"),
        processor,
        vision_levels=[0, 2],
        num_cross_attention_heads=4,
        num_object_crops=2,
        object_image_size=16,
        id2label=LABELS,
    ).eval()
    text = type(model.text_encoder).from_pretrained(folders[kind])
    vocab = text.config.vocab_size
    assert type(text) is (RobertaModel if kind == "roberta" else DebertaV2Model)
    assert model.config.image_size == 32  # the processor's, read by DINOv2's interpolated positions
    assert model.config.entity_marker_token_ids == processor.marker_token_ids() == list(range(vocab, vocab + 4))
    assert model.get_input_embeddings().weight.shape[0] == len(processor.tokenizer) == vocab + 4
    torch.testing.assert_close(model.get_input_embeddings().weight[:vocab], text.get_input_embeddings().weight)
    inputs = processor(
        text=["Corra Vane with Tamsin Holt", "Harbor Square (Olek Marrow)."],
        entities=[("Corra Vane", "Tamsin Holt"), ("Olek Marrow", "Harbor Square")],
        images=[Image.new("RGB", (40, 30), (200, 30, 10))] * 2,
    )
    assert ("token_type_ids" in inputs) == (kind == "deberta_v2")
    outputs = model(**inputs)
    assert outputs.logits.shape == (2, 3)
    assert outputs.marker_positions.tolist() == inputs["marker_positions"].tolist()


def test_entity_markers_option_reaches_processor_and_model(folders, tmp_path):
    model_args, *_ = run_mre.parse_args(["--entity_markers", "[E1]", "[/E1]", "[E2]", "[/E2]"])
    assert model_args.entity_markers == ["[E1]", "[/E1]", "[E2]", "[/E2]"]
    torch.manual_seed(0)
    SiglipVisionModel(tiny_vision_config("siglip")).save_pretrained(tmp_path / "siglip")
    ViTImageProcessorPil(size={"height": 32, "width": 32}).save_pretrained(tmp_path / "siglip")
    model_args.text_model_name_or_path = str(folders["roberta"])
    model_args.vision_model_name_or_path = str(tmp_path / "siglip")
    model_args.num_object_crops, model_args.object_image_size, model_args.num_cross_attention_heads = 2, 16, 4
    model, processor = run_mre.build_model_and_processor(
        model_args, ["None", "/per/per/peer"], folders["data"], tmp_path
    )
    assert processor.entity_markers == model.config.entity_markers == ["[E1]", "[/E1]", "[E2]", "[/E2]"]
    model_args.model_name_or_path = str(tmp_path / "anything")
    with pytest.raises(ValueError, match="--entity_markers with --model_name_or_path"):
        run_mre.build_model_and_processor(model_args, ["None"], folders["data"], tmp_path)


# Vision families: configuration


@pytest.mark.parametrize(("depth", "levels"), [(1, [0, 1]), (2, [0, 1, 2]), (5, [0, 2, 5]), (12, [0, 6, 12])])
@pytest.mark.parametrize("vision", VISION_KINDS)
def test_levels_default_to_lowest_middle_highest(vision, depth, levels):
    assert HVFormerConfig(vision_config=tiny_vision_config(vision, num_layers=depth)).vision_levels == levels


@pytest.mark.parametrize(
    ("patch", "side", "near"),
    [(14, 128, "126 or 140"), (8, 12, "8 or 16"), (8, 5, "8 or 16"), (16, 130, "128 or 144")],
)
def test_crop_size_must_be_a_multiple_of_the_patch_naming_sizes_near_it(patch, side, near):
    config = tiny_vision_config("dinov2")
    config.patch_size, config.image_size = patch, 4 * patch
    message = rf"`object_image_size` \({side}\) must be a positive multiple of the ViT patch size \({patch}\): {near}"
    with pytest.raises(ValueError, match=message):
        tiny_config(vision_config=config, object_image_size=side)


def test_only_interpolating_families_read_another_image_size():
    """DINOv2 stretches its position table to `image_size` (here 48 px, a 6x6 grid, instead of 32); CLIP cannot."""
    torch.manual_seed(0)
    model = HVFormerForRelationExtraction(tiny_config("dinov2", image_size=48)).eval()
    inputs = tiny_inputs()
    inputs["pixel_values"] = torch.randn(3, 3, 48, 48)
    assert model(**inputs).visual_token_mask.shape == (3, 1 + 36 + 8)
    with pytest.raises(ValueError, match=r"`pixel_values` of 32x32 px, but the model reads 48x48 images"):
        model(**tiny_inputs())
    with pytest.raises(ValueError, match=r"`image_size` \(48\) differs from the CLIP encoder's \(32\)"):
        tiny_config("clip", image_size=48)
    with pytest.raises(ValueError, match=r"`image_size` \(50\) must be a positive multiple of the ViT patch size"):
        tiny_config("dinov2", image_size=50)


def test_interpolated_positions_are_dinov2s_own(tmp_path):
    """A DINOv2 checkpoint with a 7x7 position table read at 32 px (4x4): V^0 of the image is the checkpoint's own
    embedding of the pixels (its position table interpolated), and the crop positions start from the 7x7 table."""
    torch.manual_seed(0)
    vision = tiny_vision_config("dinov2", num_layers=2)
    vision.image_size = 56
    backbone = Dinov2Model(vision).eval()
    backbone.save_pretrained(tmp_path / "dinov2")
    ViTImageProcessorPil(size={"height": 32, "width": 32}).save_pretrained(tmp_path / "dinov2")
    text = tiny_config().text_config
    BertModel(text, add_pooling_layer=False).save_pretrained(tmp_path / "text")
    vocab = {token: index for index, token in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a"])}
    BertTokenizerFast(vocab=vocab).save_pretrained(tmp_path / "text")
    processor = HVFormerProcessor.from_text_vision_pretrained(
        str(tmp_path / "text"), str(tmp_path / "dinov2"), num_object_crops=1, object_image_size=16, max_length=24
    )
    model = HVFormerForRelationExtraction.from_text_vision_pretrained(
        str(tmp_path / "text"),
        str(tmp_path / "dinov2"),
        processor,
        num_cross_attention_heads=4,
        num_object_crops=1,
        object_image_size=16,
        id2label=LABELS,
    ).eval()
    assert model.config.image_size == 32 and model.vision_encoder.image_grid == 4
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        levels, _ = model.vision_encoder(pixels)
        torch.testing.assert_close(levels[0], backbone.embeddings(pixels))
    table = backbone.embeddings.position_embeddings[0, 1:].detach().reshape(1, 7, 7, -1).permute(0, 3, 1, 2)
    expected = torch.nn.functional.interpolate(table, size=(2, 2), mode="bicubic").permute(0, 2, 3, 1).reshape(4, -1)
    torch.testing.assert_close(model.vision_encoder.crop_position_embeddings[0], expected)


def test_unsupported_encoders_are_refused_clearly(folders, tmp_path):
    families = re.escape(
        "CLIP ('clip_vision_model'), ViT ('vit'), DINOv2 ('dinov2'), DINOv2 with registers ('dinov2_with_registers'), "
        "SigLIP ('siglip_vision_model')."
    )
    swin = SwinConfig(embed_dim=16, depths=[1, 1], num_heads=[1, 1], image_size=32, patch_size=4)
    with pytest.raises(ValueError, match=rf"a 'swin' config; .* one token sequence per layer: {families}"):
        tiny_config(vision_config=swin)
    SwinModel(swin).save_pretrained(tmp_path / "swin")
    with pytest.raises(ValueError, match=rf"is a 'swin' checkpoint; .* one token sequence per layer: {families}"):
        HVFormerForRelationExtraction.from_text_vision_pretrained(str(folders["bert"]), str(tmp_path / "swin"), None)
    bart = BartConfig(vocab_size=50, d_model=32, encoder_layers=1, decoder_layers=1)
    with pytest.raises(ValueError, match="The text encoder is an encoder-decoder 'bart' model"):
        HVFormerForRelationExtraction(tiny_config(text_config=bart))


def test_a_family_whose_layers_take_no_attention_mask_is_refused():
    """As DINOv2's layers in transformers 5.17: absent crops could not be masked, so the family is refused."""

    class LayerWithoutMask(CLIPEncoderLayer):
        def forward(self, hidden_states):
            return super().forward(hidden_states, None)

    family = dataclasses.replace(VISION_FAMILIES["clip_vision_model"], name="Old", layer_class=LayerWithoutMask)
    with pytest.raises(ValueError, match=r"The Old layers of the installed transformers .* take no attention mask"):
        family.check_installed()
    VISION_FAMILIES["dinov2"].check_installed()


# The vision families: levels and crops


@pytest.mark.parametrize("vision", VISION_KINDS)
def test_levels_are_the_backbones_own_hidden_states(vision):
    """With no crops, HVFormer's V^0..V^L are the pretrained backbone's `hidden_states[k]` (CLIP's pre-LayerNorm
    included), and the main image's patches that the analyses draw are the backbone's patch tokens, those after
    [CLS] and the register tokens. Every backbone weight is moved off its initial value, so none can go unread."""
    torch.manual_seed(0)
    model = HVFormerForRelationExtraction(tiny_config(vision, num_object_crops=0)).eval()
    family = model.vision_encoder.family
    backbone = family.model_class(tiny_vision_config(vision), **family.load_kwargs).eval()
    with torch.no_grad():
        for parameter in backbone.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    model.vision_encoder.load_backbone(backbone)
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        levels, token_mask = model.vision_encoder(pixels)
        hidden_states = backbone(pixel_values=pixels, output_hidden_states=True).hidden_states
    prefix = PREFIX_TOKENS[vision]
    assert token_mask.shape == (2, prefix + 16) and bool(token_mask.all())
    layout = VisualTokenLayout.from_vision_encoder(model.vision_encoder, prefix + 16)
    for level, (own, reference) in enumerate(zip(levels, hidden_states, strict=True)):
        torch.testing.assert_close(own, reference, msg=f"{vision}, level {level}")
        patches = reference[:, prefix:].transpose(1, 2).reshape(2, -1, 4, 4)  # the 4x4 grid, row-major
        torch.testing.assert_close(layout.image_grid(own.transpose(1, 2)), patches, msg=f"{vision}, level {level}")


@pytest.mark.parametrize("vision", VISION_KINDS)
def test_crop_tokens_are_their_patch_embeddings_plus_their_own_positions(vision):
    """V^0 of the crops: each crop's patch embeddings plus its own position embeddings (CLIP's pre-LayerNorm
    applied), after the image's tokens, which the crops leave unchanged."""
    torch.manual_seed(0)
    encoder = HVFormerForRelationExtraction(tiny_config(vision)).eval().vision_encoder  # 2 crops of 2x2 patches
    with torch.no_grad():
        encoder.crop_position_embeddings.normal_()
        pixels, crops = torch.randn(2, 3, 32, 32), torch.randn(2, 2, 3, 16, 16)
        levels, _ = encoder(pixels, crops)
        image_levels, _ = encoder(pixels)
        patches = encoder.patch_projection(crops.flatten(0, 1)).flatten(2).transpose(1, 2).reshape(2, 8, -1)
        expected = encoder.pre_layernorm(patches + encoder.crop_position_embeddings.flatten(0, 1))
    main = PREFIX_TOKENS[vision] + 16
    assert levels[0].shape[1] == main + 8
    torch.testing.assert_close(levels[0][:, :main], image_levels[0])
    torch.testing.assert_close(levels[0][:, main:], expected)


# The level's [CLS]


def test_the_levels_cls_of_siglip_is_the_mean_of_the_present_patches():
    """SigLIP has no [CLS]: the "w/o TVA" context is the mean of the present patch tokens (image and present crops,
    absent crops left out); with a [CLS] (and register tokens) it is the [CLS] token."""
    torch.manual_seed(0)
    model = HVFormerForRelationExtraction(tiny_config("siglip", visual_context="cls")).eval()
    inputs = tiny_inputs()
    outputs = model(**inputs, output_hidden_states=True, output_tracking_maps=True)
    mask = outputs.visual_token_mask.float()  # (3, 24): samples with 2, 1 and 0 crops
    weights = model.vision_encoder.cls_weights(outputs.visual_token_mask)
    torch.testing.assert_close(weights, mask / mask.sum(-1, keepdim=True))
    assert mask.sum(-1).tolist() == [24, 20, 16] and weights[2, 16:].abs().max() == 0
    level = 2
    states = outputs.vision_hidden_states[level]
    mean = torch.stack([states[i, mask[i].bool()].mean(0) for i in range(3)])  # by hand
    context = model.experts[f"level_{level}"].visual_context
    expected = context.layer_norm(context.projection(mean))
    text = model.text_encoder(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
    _, visual_context, _ = model.experts[f"level_{level}"](text.last_hidden_state, states, None, False, weights)
    torch.testing.assert_close(visual_context[:, 0], expected)
    # Its tracking map (Eq. 18 with these weights as A_C): the mean of the present tokens' rows of H_V^l.
    rows = outputs.patch_patch_tracking_maps[level]
    by_hand = torch.stack([rows[i, mask[i].bool()].mean(0) for i in range(3)])
    torch.testing.assert_close(outputs.patch_token_tracking_maps[2][:, 0, 0], by_hand)
    assert outputs.patch_token_tracking_maps[2].shape == (3, 1, 10, 24)
    with_registers = HVFormerForRelationExtraction(tiny_config("dinov2_with_registers", visual_context="cls"))
    one_hot = with_registers.vision_encoder.cls_weights(torch.ones(1, PREFIX_TOKENS["dinov2_with_registers"] + 24))
    assert one_hot[0, 0] == 1 and one_hot.sum() == 1


# The pipeline with each vision family


@pytest.mark.parametrize("vision", VISION_KINDS)
def test_pipeline_with_each_vision_family(folders, vision):
    processor = processor_of(folders, "bert")
    torch.manual_seed(0)
    text_config = tiny_config().text_config
    text_config.vocab_size, text_config.max_position_embeddings = len(processor.tokenizer), 128
    model = HVFormerForRelationExtraction(
        tiny_config(
            vision,
            text_config=text_config,
            entity_marker_token_ids=processor.marker_token_ids(),
            id2label=dict(enumerate(["None", "/per/per/peer", "/per/loc/place_of_residence"])),
            **processor.pixel_statistics(),
        )
    ).eval()
    extractor = HVFormerRelationExtractionPipeline(model=model, processor=processor, device=-1)
    image = Image.new("RGB", (40, 30), (20, 120, 200))
    post = {"text": "Corra Vane at Harbor Square", "subject": "Corra Vane", "object": "Harbor Square", "image": image}
    result = extractor(post, top_k=3)
    encoding = processor(
        text=post["text"], entities=("Corra Vane", "Harbor Square"), images=image, padding="max_length"
    )
    with torch.no_grad():
        probabilities = model(**encoding).logits.softmax(-1)[0]
    assert [row["label"] for row in result] == [
        model.config.id2label[i] for i in probabilities.argsort(descending=True).tolist()
    ]
    assert [row["score"] for row in result] == pytest.approx(probabilities.sort(descending=True).values.tolist())
