"""Labels of the LlamaBoard "Loss" group, in every language LlamaBoard ships (its language
dropdown re-labels each component from these entries, as it does from its own LOCALES)."""

LANGUAGES = ("en", "ru", "zh", "ko", "ja")

LOSS_LOCALES = {
    "dft_tab": {
        "en": {"label": "Loss (dft_mm)"},
        "ru": {"label": "Функция потерь (dft_mm)"},
        "zh": {"label": "损失函数 (dft_mm)"},
        "ko": {"label": "손실 함수 (dft_mm)"},
        "ja": {"label": "損失関数 (dft_mm)"},
    },
    "sft_loss": {
        "en": {"label": "SFT loss", "info": "default: LLaMA-Factory's own loss; nll: token-normalised cross-entropy "
                                            "(the fair SFT baseline); dft: Dynamic Fine-Tuning; asft: DFT anchored to "
                                            "the starting model by a KL term; eaft: cross-entropy weighted by entropy."},
        "ru": {"label": "Функция потерь SFT", "info": "default: собственная функция LLaMA-Factory; nll: кросс-энтропия, "
                                                     "нормированная по токенам; dft: Dynamic Fine-Tuning; asft: DFT с "
                                                     "KL-якорем к исходной модели; eaft: кросс-энтропия с весом по энтропии."},
        "zh": {"label": "SFT 损失", "info": "default：LLaMA-Factory 自带损失；nll：按 token 归一化的交叉熵（公平的 SFT 基线）；"
                                          "dft：动态微调（Dynamic Fine-Tuning）；asft：以 KL 项锚定初始模型的 DFT；"
                                          "eaft：按熵加权的交叉熵。"},
        "ko": {"label": "SFT 손실", "info": "default: LLaMA-Factory 기본 손실; nll: 토큰 정규화 교차 엔트로피; "
                                          "dft: Dynamic Fine-Tuning; asft: 초기 모델에 KL로 고정한 DFT; "
                                          "eaft: 엔트로피 가중 교차 엔트로피."},
        "ja": {"label": "SFT 損失", "info": "default: LLaMA-Factory 標準の損失; nll: トークン正規化クロスエントロピー; "
                                          "dft: Dynamic Fine-Tuning; asft: 初期モデルへの KL 項で固定した DFT; "
                                          "eaft: エントロピーで重み付けしたクロスエントロピー。"},
    },
    "dft_level": {
        "en": {"label": "DFT level", "info": "Weight of each token: its probability (token), the sequence's (sentence) "
                                             "or their geometric mean (geomean)."},
        "ru": {"label": "Уровень DFT", "info": "Вес токена: его вероятность (token), вероятность последовательности "
                                              "(sentence) или их среднее геометрическое (geomean)."},
        "zh": {"label": "DFT 粒度", "info": "每个 token 的权重：自身概率（token）、整句概率（sentence）或几何平均（geomean）。"},
        "ko": {"label": "DFT 수준", "info": "토큰 가중치: 토큰 확률(token), 시퀀스 확률(sentence), 기하 평균(geomean)."},
        "ja": {"label": "DFT レベル", "info": "各トークンの重み: 自身の確率 (token)、系列の確率 (sentence)、幾何平均 (geomean)。"},
    },
    "dft_alpha": {
        "en": {"label": "DFT alpha", "info": "Weight = sg(p)^alpha: 0 is SFT, 1 is DFT."},
        "ru": {"label": "DFT alpha", "info": "Вес = sg(p)^alpha: 0 — SFT, 1 — DFT."},
        "zh": {"label": "DFT alpha", "info": "权重 = sg(p)^alpha：0 即 SFT，1 即 DFT。"},
        "ko": {"label": "DFT alpha", "info": "가중치 = sg(p)^alpha: 0은 SFT, 1은 DFT."},
        "ja": {"label": "DFT alpha", "info": "重み = sg(p)^alpha: 0 は SFT、1 は DFT。"},
    },
    "dft_min_weight": {
        "en": {"label": "DFT weight floor", "info": "Weight = max(sg(p)^alpha, floor): tokens the model must still learn "
                                                    "keep at least this weight (0: no floor)."},
        "ru": {"label": "Нижний порог веса DFT", "info": "Вес = max(sg(p)^alpha, порог): токены, которые модель ещё "
                                                        "должна выучить, сохраняют хотя бы этот вес (0: без порога)."},
        "zh": {"label": "DFT 权重下限", "info": "权重 = max(sg(p)^alpha, 下限)：模型尚需学习的 token 至少保留该权重（0：无下限）。"},
        "ko": {"label": "DFT 가중치 하한", "info": "가중치 = max(sg(p)^alpha, 하한): 아직 배워야 할 토큰도 이 가중치 이상을 유지 (0: 하한 없음)."},
        "ja": {"label": "DFT 重みの下限", "info": "重み = max(sg(p)^alpha, 下限): まだ学ぶべきトークンも少なくともこの重みを保つ (0: 下限なし)。"},
    },
    "asft_alpha": {
        "en": {"label": "ASFT alpha", "info": "Coefficient of KL(reference || model): how strongly training is anchored "
                                              "to the starting model."},
        "ru": {"label": "ASFT alpha", "info": "Коэффициент KL(эталон || модель): насколько сильно обучение привязано к "
                                             "исходной модели."},
        "zh": {"label": "ASFT alpha", "info": "KL(参考模型 || 当前模型) 的系数：训练锚定初始模型的强度。"},
        "ko": {"label": "ASFT alpha", "info": "KL(기준 || 모델)의 계수: 학습을 초기 모델에 얼마나 강하게 고정할지."},
        "ja": {"label": "ASFT alpha", "info": "KL(参照 || モデル) の係数: 初期モデルへの固定の強さ。"},
    },
    "eaft_alpha": {
        "en": {"label": "EAFT alpha", "info": "Weight = (entropy of the top-20 softmax / 3)^alpha: uncertain tokens "
                                              "learn more, confident ones less (0: SFT)."},
        "ru": {"label": "EAFT alpha", "info": "Вес = (энтропия softmax по top-20 / 3)^alpha: неуверенные токены учатся "
                                             "сильнее, уверенные слабее (0: SFT)."},
        "zh": {"label": "EAFT alpha", "info": "权重 = (top-20 softmax 的熵 / 3)^alpha：不确定的 token 学得多，确定的学得少（0：SFT）。"},
        "ko": {"label": "EAFT alpha", "info": "가중치 = (top-20 softmax 엔트로피 / 3)^alpha: 불확실한 토큰은 더, 확실한 토큰은 덜 학습 (0: SFT)."},
        "ja": {"label": "EAFT alpha", "info": "重み = (top-20 softmax のエントロピー / 3)^alpha: 不確かなトークンほど強く学習 (0: SFT)。"},
    },
    "dft_fused": {
        "en": {"label": "Fused head", "info": "Compute lm_head and the loss together without [batch, seq, vocab] "
                                              "logits (auto: whenever the model allows it)."},
        "ru": {"label": "Слитная голова", "info": "Считать lm_head и функцию потерь вместе, без логитов "
                                                 "[batch, seq, vocab] (auto: когда модель это допускает)."},
        "zh": {"label": "融合输出层", "info": "将 lm_head 与损失一起计算，不生成 [batch, seq, vocab] 的 logits（auto：模型支持时启用）。"},
        "ko": {"label": "융합 헤드", "info": "[batch, seq, vocab] 로짓 없이 lm_head와 손실을 함께 계산 (auto: 모델이 허용할 때)."},
        "ja": {"label": "融合ヘッド", "info": "[batch, seq, vocab] のロジットを作らず lm_head と損失をまとめて計算 (auto: モデルが許す場合)。"},
    },
}
