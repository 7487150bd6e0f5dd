#!/usr/bin/env python3
"""Chat templates as Hugging Face renders them, for the server's template families.

moepp does not run Jinja: it recognises a folder's chat_template by its markers and renders
the family itself (src/serve/chat_template.cpp). This script renders the published
templates of one model per family with Jinja2 the way transformers' apply_chat_template
does (trim_blocks, lstrip_blocks, raise_exception, bos_token/eos_token as strings,
add_generation_prompt=True) and writes what they give:

  tests/fixtures/chat_templates.json:
    [{"family", "model", "template", "cases": [{"messages", "text"}]}]

The test (tests/serve/chat_template_test.cpp) checks that moepp detects each template's
family and renders every case to the same text. Needs python3-jinja2 (Debian).

    /usr/bin/python3 tools/reference/chat_template_fixtures.py
"""
import json
import os

import jinja2

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "..", "tests", "fixtures", "chat_templates.json")

# The chat_template fields of the models' tokenizer_config.json, as published.
TEMPLATES = [
    ("llama2", "meta-llama/Llama-2-7b-chat-hf",
     "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
     "{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}"
     "{% set system_message = false %}{% endif %}{% for message in loop_messages %}"
     "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
     "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
     "{% if loop.index0 == 0 and system_message != false %}"
     "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
     "{% else %}{% set content = message['content'] %}{% endif %}"
     "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
     "{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}"
     "{% endfor %}"),
    ("mistral", "mistralai/Mixtral-8x7B-Instruct-v0.1",
     "{{ bos_token }}{% for message in messages %}"
     "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
     "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
     "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
     "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}"
     "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}"),
    ("zephyr", "HuggingFaceH4/zephyr-7b-beta",
     "{% for message in messages %}\n{% if message['role'] == 'user' %}\n"
     "{{ '<|user|>\n' + message['content'] + eos_token }}\n{% elif message['role'] == 'system' %}\n"
     "{{ '<|system|>\n' + message['content'] + eos_token }}\n{% elif message['role'] == 'assistant' %}\n"
     "{{ '<|assistant|>\n'  + message['content'] + eos_token }}\n{% endif %}\n"
     "{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n{% endfor %}"),
    ("chatml", "teknium/OpenHermes-2.5-Mistral-7B",
     "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
     "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"),
]

SYSTEM = {"role": "system", "content": "You are brief."}
CONVERSATIONS = [
    [{"role": "user", "content": "Hello"}],
    [SYSTEM, {"role": "user", "content": "Name a colour."}],
    [SYSTEM, {"role": "user", "content": "Name a colour."}, {"role": "assistant", "content": "Blue."},
     {"role": "user", "content": "Another one."}],
    [{"role": "user", "content": "One"}, {"role": "assistant", "content": "Two"},
     {"role": "user", "content": "Three"}, {"role": "assistant", "content": "Four"},
     {"role": "user", "content": "Five"}],
]


def raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def render(template, messages):
    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    return env.from_string(template).render(messages=messages, bos_token="<s>", eos_token="</s>",
                                            add_generation_prompt=True)


def main():
    out = []
    for family, model, template in TEMPLATES:
        cases = []
        for messages in CONVERSATIONS:
            try:
                cases.append({"messages": messages, "text": render(template, messages)})
            except jinja2.exceptions.TemplateError:
                pass  # the template refuses it (Mixtral's takes no system message)
        out.append({"family": family, "model": model, "template": template, "cases": cases})
    with open(OUT, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    print(f"wrote {OUT}: {sum(len(t['cases']) for t in out)} cases")


if __name__ == "__main__":
    main()
