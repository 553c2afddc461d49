"""Fake checkpoints in the exact key layouts of public CXR pretraining methods.

Each builder assembles modules that mirror the method's own (module names as in its code, cited), around a
given torchvision ResNet, and returns the state dict the method would save; shapes of the ignored parts are
shrunk where they do not matter, to keep the tests fast.
"""

from __future__ import annotations

import copy

import torch
import torchvision
from torch import nn


def random_resnet(arch: str = "resnet50", seed: int = 0) -> nn.Module:
    """A torchvision ResNet with random weights AND random BatchNorm statistics (so a wrong mapping shows)."""
    torch.manual_seed(seed)
    net = getattr(torchvision.models, arch)(weights=None)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.normal_(1, 0.1)
            m.bias.data.normal_(0, 0.1)
    return net.eval()


def reference_levels(net: nn.Module, x: torch.Tensor, stages: int = 4) -> dict[int, torch.Tensor]:
    """C1..C5 of a plain torchvision ResNet, computed by hand."""
    with torch.no_grad():
        c1 = net.relu(net.bn1(net.conv1(x)))
        out = {1: c1, 2: net.layer1(net.maxpool(c1))}
        out[3] = net.layer2(out[2])
        out[4] = net.layer3(out[3])
        if stages == 4:
            out[5] = net.layer4(out[4])
    return out


class FakeBert(nn.Module):
    """A few BERT module names (the text encoders are ignored; only their keys matter)."""

    def __init__(self):
        super().__init__()
        self.embeddings = nn.Module()
        self.embeddings.word_embeddings = nn.Embedding(30, 8)
        self.embeddings.LayerNorm = nn.LayerNorm(8)
        self.encoder = nn.Module()
        self.encoder.layer = nn.ModuleList([nn.Module()])
        self.encoder.layer[0].attention = nn.Linear(8, 8)


def headless(net: nn.Module) -> nn.Module:
    net = copy.deepcopy(net)  # same weights, own module: the fixture keeps its fc
    net.fc = nn.Identity()  # GLoRIA / MGCA: model.fc = Identity()
    return net


# ----------------------------------------------------------------------------------------------- the formats


def make_gloria(net):
    # marshuang80/gloria: PretrainModel.gloria = GLoRIA(text_encoder=BertEncoder, img_encoder=ImageEncoder)
    img = nn.Module()
    img.model = headless(net)
    img.global_embedder = nn.Linear(2048, 768)
    img.local_embedder = nn.Conv2d(1024, 768, 1, bias=False)
    text = nn.Module()
    text.model = FakeBert()
    gloria = nn.Module()
    gloria.text_encoder, gloria.img_encoder = text, img
    top = nn.Module()
    top.gloria = gloria
    return top.state_dict()


def make_mgca(net):
    # HKU-MedAI/MGCA: MGCA(img_encoder_q=ImageEncoder(model, global_embed, local_embed), text_encoder_q, ...)
    def embedding(cls, i, o):
        e = nn.Module()
        e.head = nn.Sequential(
            cls(i, 16), nn.BatchNorm1d(16), nn.ReLU(), cls(16, o), nn.BatchNorm1d(o, affine=False)
        )
        return e

    img = nn.Module()
    img.model = headless(net)
    img.global_embed = embedding(nn.Linear, 2048, 128)
    img.local_embed = nn.Module()
    img.local_embed.head = nn.Sequential(
        nn.Conv1d(1024, 16, 1), nn.BatchNorm1d(16), nn.ReLU(), nn.Conv1d(16, 128, 1)
    )
    text = nn.Module()
    text.model = FakeBert()
    text.global_embed = embedding(nn.Linear, 8, 128)
    top = nn.Module()
    top.img_encoder_q, top.text_encoder_q = img, text
    top.patch_local_atten_layer = nn.MultiheadAttention(128, 1, batch_first=True)
    top.word_local_atten_layer = nn.MultiheadAttention(128, 1, batch_first=True)
    top.prototype_layer = nn.Linear(128, 500, bias=False)
    return top.state_dict()


def make_lovt(net):
    # philip-mueller/lovt: learner.model_a = ModalityModel(encoder=ScanEncoderModel(feature_extractor=
    # ResNetFeatureExtractor(backbone_layers=ModuleDict(children[:-2])), global_aggregator), project_*)
    extractor = nn.Module()
    extractor.backbone_layers = nn.ModuleDict(list(net.named_children())[:-2])
    scan = nn.Module()
    scan.feature_extractor = extractor
    scan.global_aggregator = nn.Module()
    scan.global_aggregator.attention = nn.MultiheadAttention(64, 8, batch_first=True)  # real: d=2048
    model_a = nn.Module()
    model_a.encoder = scan
    model_a.project_local = nn.Sequential(
        nn.Linear(2048, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 16)
    )
    model_a.project_global = nn.Sequential(
        nn.Linear(2048, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 16)
    )
    model_b = nn.Module()
    model_b.encoder = nn.Module()
    model_b.encoder.transformer = FakeBert()
    model_b.project_local = nn.Linear(8, 16)
    top = nn.Module()
    top.model_a, top.model_b = model_a, model_b
    top.ll_attention = nn.Module()
    top.ll_attention.project_keys = nn.Linear(16, 16)
    top.loss_module = nn.Module()
    top.loss_module.g_alignment = nn.Linear(16, 16)
    return top.state_dict()


def make_biovil(net, temporal: bool = False):
    # microsoft/hi-ml: ImageModel(encoder=ImageEncoder(encoder=ResNetHIML incl. fc), projector=MLP(1x1 convs))
    image_encoder = nn.Module()
    image_encoder.encoder = net  # fc kept, as ResNetHIML does
    if temporal:  # MultiImageEncoder
        image_encoder.backbone_to_vit = nn.Conv2d(2048, 256, 1, bias=False)
        image_encoder.vit_pooler = nn.Module()
        image_encoder.vit_pooler.blocks = nn.ModuleList([nn.LayerNorm(256)])
        image_encoder.vit_pooler.norm_post = nn.LayerNorm(256)
        image_encoder.missing_previous_emb = nn.Parameter(torch.zeros(1, 256, 1, 1))
    model = nn.Module()
    model.encoder = image_encoder
    feat = 512 if temporal else 2048
    model.projector = nn.Module()
    model.projector.model = nn.Sequential(
        nn.Conv2d(feat, 128, 1, bias=False), nn.BatchNorm2d(128), nn.ReLU(), nn.Conv2d(128, 128, 1)
    )
    return model.state_dict()


def make_medklip(net, with_layer4: bool = False):
    # MediaBrain-SJTU/MedKLIP: res_features = Sequential(*children[:-3]); saved as DataParallel(model)
    model = nn.Module()
    model.res_features = nn.Sequential(*list(net.children())[: -1 if with_layer4 else -3])
    model.res_l1 = nn.Linear(1024, 1024)
    model.res_l2 = nn.Linear(1024, 256)
    model.disease_embedding_layer = nn.Linear(768, 256)
    model.cl_fc = nn.Linear(256, 768)
    model.decoder = nn.Module()
    model.decoder.layers = nn.ModuleList([nn.Linear(256, 256)])
    model.classifier = nn.Linear(256, 2)
    return nn.DataParallel(model).state_dict()


def make_mmpretrain(net):
    # open-mmlab/mmpretrain: ImageClassifier(backbone=ResNet(depth=50), neck=GlobalAveragePooling, head=LinearClsHead)
    top = nn.Module()
    top.backbone = headless(net)
    top.head = nn.Module()
    top.head.fc = nn.Linear(2048, 1000)
    return top.state_dict()
